"""Which language variant of a template a recipient gets, and why (pure: record in, choice out).

A template names its variants by language (``languages: {hi: feedback_hi}``), each a template
of its own (its DLT ids, category and segment budget are checked like any other). The caller's
language comes, in order, from the call (the ``SMS_LANG`` dialplan variable, else the
channel's ``Language`` as AMI reports it: the tracker has already picked), the number's own
preference (a reply keyword such as ``HINDI: {language: hi}``, kept by the store and held
in memory by the record path), the caller's country
(``defaults.language_by_country``), then ``defaults.language``. A source whose language has no
variant is passed over. Texts to agents are in the default language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.models import CallRecord, RecipientKind
from agent.rules.schema import RulesConfig
from agent.sms.numbers import country_of


def normalise(tag: str) -> str:
    """``hi_IN`` / ``HI-in`` -> ``hi-in``: what variant keys and sources are compared as."""
    return tag.strip().replace("_", "-").lower()


@dataclass(frozen=True, slots=True)
class Choice:
    template: str  # the variant's template name
    language: str
    why: str  # for explain


def variants(config: RulesConfig, template: str) -> dict[str, str]:
    """language -> template name, the template itself under its own language."""
    tpl = config.templates[template]
    own = normalise(tpl.language or config.defaults.language)
    out = {own: template}
    out.update({normalise(k): v for k, v in tpl.languages.items()})
    return out


def _pick(table: Mapping[str, str], language: str) -> str | None:
    """The variant for ``language``: exact (``hi-in``), else its primary subtag (``hi``)."""
    lang = normalise(language)
    if lang in table:
        return lang
    primary = lang.split("-", 1)[0]
    if primary in table:
        return primary
    return next((k for k in table if k.split("-", 1)[0] == primary), None)


def choose(
    config: RulesConfig,
    template: str,
    record: CallRecord,
    recipient: RecipientKind,
    number: str | None,
    preference: str | None = None,
) -> Choice:
    """The variant this recipient gets. ``preference``: the number's stored choice, if any."""
    table = variants(config, template)
    d = config.defaults
    default = normalise(d.language)
    passed: list[str] = []
    if len(table) > 1 and recipient is not RecipientKind.AGENT:
        country = country_of(number) if number else None
        sources = (
            (record.language, "the call's language (SMS_LANG, else the channel's Language)"),
            (preference, "the number's preference (reply keyword)"),
            (d.language_by_country.get(country) if country else None,
             f"the caller's country {country}"),
        )
        for lang, source in sources:
            if not lang:
                continue
            key = _pick(table, lang)
            if key is not None:
                return Choice(table[key], key, f"{key} from {source} {lang!r}")
            passed.append(f"{source} {lang!r} has no variant")
    key = _pick(table, default)
    if key is None:  # no variant in the default language: the template as written
        key = next(iter(table))
    why = "agents get the default language" if recipient is RecipientKind.AGENT else "default"
    return Choice(table[key], key, f"{key}: {'; '.join([*passed, why])}")
