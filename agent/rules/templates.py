"""SMS templates: compiled from rules.yaml (merge tags checked, worst case measured) and rendered
for one call so that the text fits its segment budget."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Template, TemplateError, TemplateSyntaxError, meta, nodes

from agent.models import CallRecord
from agent.rules.templating import (
    ENV,
    FUNCTIONS,
    MERGE_TAGS,
    RECORD_FIELDS,
    Level,
    LinkFactory,
    TemplateProblem,
    TemplateRenderError,
    TooLongError,
    Vars,
    render,
    strict,
    untrusted_value,
)
from agent.rules.worstcase import WorstCase, worst_case
from agent.sms.encoding import SmsInfo, analyze
from agent.sms.links import LINK_CODE_LENGTH
from agent.sms.untrusted import (
    CALLER_FIELDS,
    DEFAULT_POLICY,
    UntrustedPolicy,
)

__all__ = ["LinkFactory", "TemplateProblem", "TemplateRenderError", "TooLongError"]


# Words that make an Indian DLT scrutiny (and most operators) treat a message as promotional.
_PROMO = re.compile(
    r"\b(offers?|discounts?|coupons?|sale|free|cashback|deals?|promo(?:tion)?s?|"
    r"limited[ -]time|buy now|hurry|win(?:ner)?|prizes?|voucher)\b|\d+\s*%\s*off\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    name: str
    source: str
    template: Template
    tags: frozenset[str]  # merge tags used: "caller_name", "vars.TICKET", "now" ...
    uses_link: bool
    worst: WorstCase
    promotional: tuple[str, ...]  # promotional words found in the static text

    @property
    def names(self) -> frozenset[str]:
        """The context names rendering can look up ("vars" for any vars.X): nothing else in a
        call's context is ever read, so nothing else is built (Jinja resolves a template's
        names through its context alone; ``merge_tags`` finds every one)."""
        return _context_names(self.tags)


@functools.lru_cache(maxsize=256)
def _context_names(tags: frozenset[str]) -> frozenset[str]:
    return frozenset(t.split(".", 1)[0] for t in tags)


@functools.lru_cache(maxsize=256)
def _record_fields(names: frozenset[str]) -> tuple[str, ...]:
    return tuple(n for n in RECORD_FIELDS if n in names)


def _walk_tags(ast: nodes.Template) -> Iterator[str]:
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "vars":
            yield f"vars.{node.attr}"
    for item in ast.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "vars"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            yield f"vars.{item.arg.value}"


def merge_tags(source: str) -> frozenset[str]:
    """The merge tags and functions a template uses; raises TemplateProblem on bad syntax."""
    ast = _parse(source)
    try:
        undeclared = meta.find_undeclared_variables(ast)
    except TemplateError as exc:  # an unknown filter or test; folding constants ("a"["b"] or x)
        raise TemplateProblem(f"template error: {exc.message}", getattr(exc, "lineno", None)) \
            from None
    names = set(undeclared) - set(ENV.globals)
    found = set(_walk_tags(ast))
    if found:
        names.discard("vars")
    return frozenset(names | found)


def _parse(source: str) -> nodes.Template:
    try:
        return ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno) from None


def _check_tags(tags: frozenset[str]) -> None:
    known = MERGE_TAGS | FUNCTIONS | {"vars"}
    for tag in sorted(tags):
        if tag.startswith("vars.") or tag in known:
            continue
        close = difflib.get_close_matches(tag, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TemplateProblem(
            f"unknown merge tag {tag!r}: use a call record field, vars.NAME, now or link(){hint}"
        )


def reserved_link(public_base_url: str) -> LinkFactory:
    """A stand-in for the short-link factory: as long as a real short link will be."""
    placeholder = f"{public_base_url.rstrip('/')}/l/{'x' * LINK_CODE_LENGTH}"

    def link(url: Any) -> str:
        strict(url)
        return placeholder

    return link


def _guard_link(factory: LinkFactory) -> LinkFactory:
    def link(url: Any) -> str:
        strict(url)
        return factory(str(url))

    return link


def build_context(
    record: CallRecord,
    *,
    timezone: str,
    now: datetime,
    link: LinkFactory | None,
    untrusted: UntrustedPolicy = DEFAULT_POLICY,
    level: Level = "clean",
    recording: str | None = None,
    names: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Merge-tag values for one call: empty values are left out (undefined), datetimes are
    shown in ``timezone`` (naive ones are taken as UTC), caller-controlled values cleaned
    (agent.sms.untrusted; ``level`` gsm/drop tighten it when the text ran over max_segments).
    ``names``: only these (``CompiledTemplate.names``); None: every merge tag."""
    tz = ZoneInfo(timezone)
    ctx: dict[str, Any] = {}
    for name in RECORD_FIELDS if names is None else _record_fields(names):
        value = getattr(record, name)
        if value is None or value == "" or name == "vars":
            continue
        if isinstance(value, datetime):
            value = _local(value, tz)
        elif name in CALLER_FIELDS and isinstance(value, str):
            value = untrusted_value(name, value, untrusted, level)
        ctx[name] = value
    if names is None or "vars" in names:
        ctx["vars"] = Vars({
            k: untrusted_value(f"vars.{k}", v, untrusted, level)
            if k in untrusted.vars and v else v
            for k, v in record.vars.items()
        })
    if names is None or "now" in names:
        ctx["now"] = _local(now, tz)
    if link is not None:
        ctx["link"] = _guard_link(link)
        if recording is not None:  # the signed URL itself never reaches the text
            ctx["recording_link"] = link(recording)
    return ctx


def render_call(compiled: CompiledTemplate, record: CallRecord, **how: Any) -> str:
    """``render_measured``'s text alone, for a caller that needs only the text."""
    return render_measured(compiled, record, **how)[0]


def render_measured(
    compiled: CompiledTemplate,
    record: CallRecord,
    *,
    timezone: str,
    now: datetime,
    link: LinkFactory | None,
    untrusted: UntrustedPolicy = DEFAULT_POLICY,
    max_segments: int | None = None,
    over_segments: str = "suppress",
    recording: str | None = None,
) -> tuple[str, SmsInfo]:
    """Render for one call so that the text fits ``max_segments`` whatever the caller put in
    their values: if it does not, once more with their non-GSM characters removed (a name
    that turns the text into UCS-2), then without their values at all; still too long is a
    TooLongError (suppressed as too_long), never a longer text than the operator approved.
    The rule's ``over_segments`` may say otherwise: ``send`` sends the text as rendered,
    ``truncate`` cuts it to fit. The text comes with its encoding and segments as its fit was
    judged: they travel with it, not worked out again."""
    levels: tuple[Level, ...] = ("clean",) if over_segments != "suppress" else (
        "clean", "gsm", "drop")
    text = ""
    for level in levels:
        ctx = build_context(record, timezone=timezone, now=now, link=link,
                            untrusted=untrusted, level=level, recording=recording,
                            names=compiled.names)
        text = render_template(compiled, ctx)
        info = analyze(text)
        if max_segments is None or info.segments <= max_segments:
            return text, info
    if over_segments == "send":
        return text, info
    if over_segments == "truncate" and max_segments is not None:
        cut = truncate_to_segments(text, max_segments)
        return cut, analyze(cut)
    raise TooLongError(
        compiled.name, f"{info.segments} segments ({info.encoding}, {info.units} units) exceed "
        f"max_segments {max_segments}")


def truncate_to_segments(text: str, max_segments: int) -> str:
    """The longest start of ``text`` that, with an ellipsis, fits ``max_segments`` in the
    encoding it needs (cut between characters, never inside an escape or surrogate pair)."""
    ellipsis = "..." if analyze(text).encoding == "GSM-7" else "\u2026"
    lo, hi = 0, len(text)
    while lo < hi:  # the fit is monotonic in the prefix length
        mid = (lo + hi + 1) // 2
        if analyze(text[:mid].rstrip() + ellipsis).segments <= max_segments:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ellipsis


def _local(value: datetime, tz: ZoneInfo) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(tz)


def render_template(compiled: CompiledTemplate, context: Mapping[str, Any]) -> str:
    """Render; any failure is a TemplateRenderError and never a partial text."""
    return render(compiled.name, compiled.template, context)


def promotional_words(text: str) -> tuple[str, ...]:
    """Promotional wording in a template's static text (merge tags removed)."""
    static = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", text, flags=re.DOTALL)
    return tuple(dict.fromkeys(m.group(0).lower() for m in _PROMO.finditer(static)))


def compile_template(
    name: str, source: str, *, timezone: str, public_base_url: str | None,
    untrusted: UntrustedPolicy = DEFAULT_POLICY,
    recordings: bool = False,
) -> CompiledTemplate:
    """Parse, check merge tags and measure the worst case; raises TemplateProblem.
    ``recordings``: defaults.recordings is set (``recording_link`` needs it)."""
    tags = merge_tags(source)
    _check_tags(tags)
    uses_link = "link" in tags or "recording_link" in tags
    if "link" in tags and not public_base_url:
        raise TemplateProblem("link() needs defaults.public_base_url for tracked links")
    if "recording_link" in tags and not (public_base_url and recordings):
        raise TemplateProblem("recording_link needs defaults.recordings and "
                              "defaults.public_base_url (the link is tracked and signed)")
    try:
        template = ENV.from_string(source)
    except TemplateError as exc:  # also what folding its constants raises ("a"["b"] or x)
        raise TemplateProblem(f"template error: {exc.message}", getattr(exc, "lineno", None)) \
            from None
    link = reserved_link(public_base_url) if public_base_url else None
    worst = worst_case(name, template, tags, timezone, link, untrusted)
    return CompiledTemplate(
        name=name,
        source=source,
        template=template,
        tags=tags,
        uses_link=uses_link,
        worst=worst,
        promotional=promotional_words(source),
    )
