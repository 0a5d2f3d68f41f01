"""India DLT checks on rules.yaml: registered ids, the registered text's ``{#var#}`` pattern, headers.

TRAI's DLT scrubbing drops a text whose template and principal entity are not registered, whose
wording departs from the registered template (each ``{#var#}`` slot takes up to 30 characters),
or whose header (sender id) is not the registered kind: six letters for transactional and
service texts, six digits for promotional ones. The loader refuses such a file with
region IN rather than letting the operator find out from a day of silent rejections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from agent.errors import Problem
from agent.rules.ruleset import RuleSet
from agent.rules.schema import Template
# The worst-case machinery check already measures templates with: the same renderings are
# what the DLT scrubber would see.
from agent.rules.templates import CompiledTemplate, reserved_link
from agent.rules.templating import TemplateRenderError, render
from agent.rules.worstcase import WorstVars, worst_context
from agent.sms.untrusted import UntrustedPolicy

#: DLT allows at most this many characters in one ``{#var#}`` slot.
SLOT_MAX = 30
_SLOT = re.compile(r"\{#var#\}", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
#: The categories DLT registration is required for here (promotional has its own regime).
REGISTERED = ("transactional", "service")


def _squash(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def pattern(dlt_text: str) -> re.Pattern[str]:
    """The registered text as a regex: literal parts exact (runs of spaces as one), each
    ``{#var#}`` any text of up to SLOT_MAX characters."""
    parts = _SLOT.split(_squash(dlt_text))
    body = f"(.{{0,{SLOT_MAX}}}?)".join(re.escape(p) for p in parts)
    return re.compile(f"^{body}$", re.DOTALL)


def _renderings(ct: CompiledTemplate, timezone: str, public_base_url: str | None,
                max_length: int) -> Iterator[str]:
    """What a real call can make of the template: every value present at its worst-case
    length, then each optional merge tag missing in turn (its fallback text)."""
    untrusted = UntrustedPolicy(max_length, frozenset())
    full = worst_context(timezone, reserved_link(public_base_url) if public_base_url else None,
                          untrusted)
    yield render(ct.name, ct.template, full)
    for tag in sorted(ct.tags):
        ctx = dict(full)
        if tag.startswith("vars."):
            ctx["vars"] = WorstVars(missing=tag[5:], untrusted=untrusted)
        elif tag in ctx and tag not in ("now", "link", "call_id", "trigger"):
            del ctx[tag]
        else:
            continue
        try:
            yield render(ct.name, ct.template, ctx)
        except TemplateRenderError:
            continue  # the message is suppressed without it: nothing reaches the scrubber


def mismatch(ct: CompiledTemplate, dlt_text: str, *, timezone: str,
             public_base_url: str | None, max_length: int) -> str | None:
    """Why a rendering of the template would not pass the registered text, or None."""
    rx = pattern(dlt_text)
    for text in _renderings(ct, timezone, public_base_url, max_length):
        flat = _squash(text)
        m = rx.match(flat)
        if m is None:
            loose = re.compile(rx.pattern.replace(f"{{0,{SLOT_MAX}}}", "*"), re.DOTALL)
            if (lm := loose.match(flat)) is not None:
                long = max(lm.groups(), key=len)
                return (f"a {{#var#}} slot would hold {len(long)} characters ({long[:40]!r}); "
                        f"DLT allows {SLOT_MAX}")
            return f"renders as {flat[:120]!r}, which does not fit dlt_text {_squash(dlt_text)[:120]!r}"
    return None


def header_problem(sender_id: str, category: str) -> str | None:
    """DLT headers: six letters for transactional/service, six digits for promotional."""
    if category == "promotional":
        ok, want = re.fullmatch(r"\d{6}", sender_id) is not None, "6 digits"
    else:
        ok, want = re.fullmatch(r"[A-Za-z]{6}", sender_id) is not None, "6 letters"
    if ok:
        return None
    return f"DLT header {sender_id!r} for {category} texts must be {want}"


def _at(rs: RuleSet, path: str, message: str) -> Problem:
    line, col = rs.positions.get(path, (None, None))
    return Problem(rs.filename, line, col, path, message)


def problems(rs: RuleSet) -> list[Problem]:
    """Every DLT problem in the file, located; with a region other than IN only
    registered-text mismatches (``dlt_text`` is opt-in anywhere)."""
    d = rs.defaults
    india = d.region == "IN"
    out: list[Problem] = []

    def at(path: str, message: str) -> None:
        out.append(_at(rs, path, message))

    for name, tpl in rs.config.templates.items():
        ct = rs.templates.get(name)
        if india and tpl.category in REGISTERED:
            missing = [k for k, v in (("dlt_template_id", tpl.dlt_template_id),
                                      ("dlt_entity_id", tpl.dlt_entity_id or d.dlt_entity_id))
                       if v is None]
            if missing:
                at(f"templates.{name}",
                   f"region IN: a {tpl.category} template needs {' and '.join(missing)}"
                   + (" (here or defaults.dlt_entity_id)" if "dlt_entity_id" in missing else "")
                   + "; operators drop unregistered texts")
        if tpl.dlt_text is not None and ct is not None:
            why = mismatch(ct, tpl.dlt_text, timezone=d.timezone,
                           public_base_url=d.public_base_url, max_length=d.untrusted.max_length)
            if why:
                at(f"templates.{name}.dlt_text", why)
    if india:
        out += _headers(rs)
    return out


def _headers(rs: RuleSet) -> list[Problem]:
    out: dict[str, Problem] = {}
    d = rs.defaults
    for i, rule in enumerate(rs.rules):
        tpl: Template = rs.config.templates[rule.send.template]
        sender = rule.send.sender_id or d.sender_id
        why = header_problem(sender, tpl.category)
        if why:
            path = f"rules[{i}].send.sender_id" if rule.send.sender_id else "defaults.sender_id"
            # one problem per header and category: the default header serves many rules
            out.setdefault(f"{path} {tpl.category}",
                           _at(rs, path, f"{why} (rule {rule.name}, template "
                                         f"{rule.send.template})"))
    return list(out.values())
