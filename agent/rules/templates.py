"""SMS templates: sandboxed Jinja2 with strict merge tags, rendering, and worst-case length analysis."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.errors import AftercallError
from agent.models import CallRecord
from agent.sms.encoding import SmsInfo, analyze
from agent.sms.links import LINK_CODE_LENGTH
from agent.sms.numbers import mask as mask_number
from agent.sms.untrusted import (
    CALLER_FIELDS,
    DEFAULT_POLICY,
    UntrustedPolicy,
    clean,
    gsm_only,
)

LinkFactory = Callable[[str], str]

#: Merge tags: every CallRecord field, plus ``now``; ``vars.NAME`` for channel variables.
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CallRecord))
#: ``recording_link``: a tracked short link to a signed, expiring URL of the call's recording
#: (agent.sms.recording); undefined when the call has no recording.
MERGE_TAGS: frozenset[str] = frozenset(RECORD_FIELDS) | {"now", "recording_link"}
FUNCTIONS: frozenset[str] = frozenset({"link"})
_JINJA_GLOBALS = ("range", "dict", "namespace", "joiner", "cycler")
_DATETIME_FIELDS = ("started_at", "answered_at", "ended_at")

# Longest plausible values, for segment budgets (DESIGN section 3). 29 Sep 2027 is a Wednesday
# in September: the longest English day and month names, at 23:59 for two-digit hours.
_WORST_DT = datetime(2027, 9, 29, 23, 59, 59, tzinfo=UTC)
_WORST_VALUES: dict[str, Any] = {
    "call_id": "1799999999.99999",
    "trigger": "call_completed",
    "caller": "+" + "9" * 15,
    "caller_name": "W" * 20,
    "did": "9" * 15,
    "direction": "outbound",
    "queue": "Q" * 12,
    "agent": "PJSIP/" + "9" * 6,
    "agent_name": "W" * 20,
    "agent_number": "+" + "9" * 15,
    "disposition": "abandoned",
    "wait_seconds": 86399.9,
    "talk_seconds": 86399.9,
    "duration_seconds": 86399.9,
    "hangup_cause": 127,
    "hangup_by": "caller",
    "tags": ("T" * 12, "T" * 12, "T" * 12),
    "language": "en-IN",
    "wrapup": "W" * 32,
}
_WORST_VAR = "V" * 12
# What ``| trusted`` may pass through: the tracker keeps at most 256 characters of a value.
_WORST_RAW = "W" * 256

# Words that make an Indian DLT scrutiny (and most operators) treat a message as promotional.
_PROMO = re.compile(
    r"\b(offers?|discounts?|coupons?|sale|free|cashback|deals?|promo(?:tion)?s?|"
    r"limited[ -]time|buy now|hurry|win(?:ner)?|prizes?|voucher)\b|\d+\s*%\s*off\b",
    re.IGNORECASE,
)


_UNDEFINED = re.compile(r"^'(\w+)' is undefined$")


class TemplateRenderError(AftercallError):
    """A template could not be rendered for a call (a missing value, a bad filter argument);
    the message is suppressed as ``template_error`` with ``reason`` as the detail."""

    def __init__(self, template: str, reason: str):
        self.template = template
        self.reason = reason
        super().__init__(f"template {template}: {reason}")


class TemplateProblem(ValueError):
    """A template is wrong at load time; ``line`` is 1-based inside the template text."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


class _Vars:
    """Channel variables as seen by templates: ``vars.TICKET``; a missing or empty one is
    undefined, so ``default()`` applies and a bare use fails instead of leaving a hole."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        self._values = {k: v for k, v in values.items() if v not in ("", None)}

    def _get(self, key: str) -> Any:
        return self._values.get(key)

    def __getitem__(self, key: str) -> Any:
        value = self._get(key)
        if value is None:
            return StrictUndefined(hint=f"vars.{key} is missing for this call", name=f"vars.{key}")
        return value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and not isinstance(self._get(key), Undefined | None)


class TooLongError(TemplateRenderError):
    """The text for this call needs more segments than the template's max_segments: the
    message is suppressed as ``too_long``."""


class Untrusted(str):
    """A caller-controlled value, cleaned; ``raw`` is what ``| trusted`` gives back."""

    raw: str

    def __new__(cls, value: str, raw: str) -> Untrusted:
        obj = super().__new__(cls, value)
        obj.raw = raw
        return obj


class Refused(StrictUndefined):
    """A caller-controlled value refused (a URL in a name, say): missing to the template, so
    ``default()`` applies, yet ``| trusted`` still reaches it."""

    __slots__ = ("raw",)

    def __init__(self, name: str, raw: str, why: str) -> None:
        super().__init__(hint=f"{name} was refused: {why}", name=name)
        self.raw = raw


Level = Literal["clean", "gsm", "drop"]


def _untrusted(name: str, value: str, policy: UntrustedPolicy, level: Level) -> Any:
    c = clean(value, max_length=policy.max_length, name=name == "caller_name")
    if c.value is None:
        return Refused(name, c.trusted, c.refused or "empty")
    if level == "drop":
        return Refused(name, c.trusted, "the text would exceed max_segments with it")
    if level == "gsm":
        kept = gsm_only(c.value)
        if kept is None:
            return Refused(name, c.trusted, "not GSM-7 and the text would exceed max_segments")
        return Untrusted(kept, c.trusted)
    return Untrusted(c.value, c.trusted)


class _WorstVars(_Vars):
    __slots__ = ("_missing", "_non_gsm", "_untrusted")

    def __init__(self, missing: str | None = None, untrusted: UntrustedPolicy = DEFAULT_POLICY,
                 non_gsm: bool = False):
        super().__init__({})
        self._missing = missing
        self._untrusted = untrusted
        self._non_gsm = non_gsm

    def _get(self, key: str) -> Any:
        if key == self._missing:
            return None
        if key in self._untrusted.vars:
            n = self._untrusted.max_length
            return Untrusted(_nongsm(_WORST_VAR[:n].ljust(n, "V"), self._non_gsm), _WORST_RAW)
        return _nongsm(_WORST_VAR, self._non_gsm)


# A character outside GSM-7 (Devanagari A): one of them in a free-text value (a caller's or an
# agent's name, a dialplan variable) turns the whole text into UCS-2.
NON_GSM_CHAR = "\u0905"
FREE_TEXT_FIELDS = ("caller_name", "agent_name")


def _nongsm(value: str, on: bool) -> str:
    return NON_GSM_CHAR + value[1:] if on and value else value


def _strict(value: Any) -> None:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the missing tag


def _fmt(default: str) -> Callable[..., str]:
    def render(value: Any, fmt: str = default) -> str:
        _strict(value)
        if not isinstance(value, datetime):
            kind = "str" if isinstance(value, str) else type(value).__name__
            raise TypeError(f"needs a date/time, got {kind}")
        return value.strftime(fmt)

    return render


def _last(value: Any, n: int = 4) -> str:
    _strict(value)
    digits = re.sub(r"\D", "", str(value))
    return digits[-n:] if n > 0 else ""


def _mask(value: Any, keep: int = 4) -> str:
    _strict(value)
    return mask_number(str(value), keep)


def _trusted(value: Any) -> Any:
    """``{{ caller_name | trusted }}``: the caller's value with only invisible characters
    removed, not cut and not refused. The template's author vouches for where it goes."""
    if isinstance(value, Untrusted | Refused):
        return value.raw
    _strict(value)
    return value


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,  # plain text: an SMS has no markup to escape
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals = {k: v for k, v in env.globals.items() if k in _JINJA_GLOBALS}
    env.filters.update(
        datetime=_fmt("%d %b %Y %H:%M"),
        date=_fmt("%d %b %Y"),
        time=_fmt("%H:%M"),
        last=_last,
        mask=_mask,
        trusted=_trusted,
    )
    return env


_ENV = _environment()


@dataclass(frozen=True, slots=True)
class WorstCase:
    text: str  # the longest rendering found
    info: SmsInfo
    required: tuple[str, ...]  # merge tags whose absence makes rendering fail (message suppressed)
    # The same with a non-GSM character in every free-text value (names, vars): what a
    # Devanagari caller name does to the encoding and segment count.
    non_gsm: SmsInfo | None = None


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    name: str
    source: str
    template: Template
    tags: frozenset[str]  # merge tags used: "caller_name", "vars.TICKET", "now" ...
    uses_link: bool
    worst: WorstCase
    promotional: tuple[str, ...]  # promotional words found in the static text


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
    except TemplateSyntaxError as exc:  # TemplateAssertionError: unknown filter or test
        raise TemplateProblem(f"template error: {exc.message}", exc.lineno) from None
    names = set(undeclared) - set(_ENV.globals)
    found = set(_walk_tags(ast))
    if found:
        names.discard("vars")
    return frozenset(names | found)


def _parse(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
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
        _strict(url)
        return placeholder

    return link


def _guard_link(factory: LinkFactory) -> LinkFactory:
    def link(url: Any) -> str:
        _strict(url)
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
) -> dict[str, Any]:
    """Merge-tag values for one call: empty values are left out (undefined), datetimes are
    shown in ``timezone`` (naive ones are taken as UTC), caller-controlled values cleaned
    (agent.sms.untrusted; ``level`` gsm/drop tighten it when the text ran over max_segments)."""
    tz = ZoneInfo(timezone)
    ctx: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = getattr(record, name)
        if value is None or value == "" or name == "vars":
            continue
        if isinstance(value, datetime):
            value = _local(value, tz)
        elif name in CALLER_FIELDS and isinstance(value, str):
            value = _untrusted(name, value, untrusted, level)
        ctx[name] = value
    ctx["vars"] = _Vars({
        k: _untrusted(f"vars.{k}", v, untrusted, level) if k in untrusted.vars and v else v
        for k, v in record.vars.items()
    })
    ctx["now"] = _local(now, tz)
    if link is not None:
        ctx["link"] = _guard_link(link)
        if recording is not None:  # the signed URL itself never reaches the text
            ctx["recording_link"] = link(recording)
    return ctx


def render_call(
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
) -> str:
    """Render for one call so that the text fits ``max_segments`` whatever the caller put in
    their values: if it does not, once more with their non-GSM characters removed (a name
    that turns the text into UCS-2), then without their values at all; still too long is a
    TooLongError (suppressed as too_long), never a longer text than the operator approved.
    The rule's ``over_segments`` may say otherwise: ``send`` sends the text as rendered,
    ``truncate`` cuts it to fit."""
    levels: tuple[Level, ...] = ("clean",) if over_segments != "suppress" else (
        "clean", "gsm", "drop")
    text = ""
    for level in levels:
        ctx = build_context(record, timezone=timezone, now=now, link=link,
                            untrusted=untrusted, level=level, recording=recording)
        text = render_template(compiled, ctx)
        if max_segments is None or analyze(text).segments <= max_segments:
            return text
    if over_segments == "send":
        return text
    if over_segments == "truncate" and max_segments is not None:
        return truncate_to_segments(text, max_segments)
    info = analyze(text)
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
    return _render(compiled.name, compiled.template, context)


def _render(name: str, template: Template, context: Mapping[str, Any]) -> str:
    try:
        text = template.render(context).strip()
    except TemplateError as exc:
        reason = exc.message or type(exc).__name__
        raise TemplateRenderError(
            name, _UNDEFINED.sub(r"\1 is missing for this call", reason)
        ) from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRenderError(name, f"{type(exc).__name__}: {exc}") from None
    if not text:
        raise TemplateRenderError(name, "rendered to an empty message")
    return text


def _worst_context(
    timezone: str, link: LinkFactory | None, untrusted: UntrustedPolicy
) -> dict[str, Any]:
    ctx = dict(_WORST_VALUES)
    # Caller-controlled values are cut to the budget at send time: that is their worst case.
    n = untrusted.max_length
    ctx["caller_name"] = Untrusted("W" * n, _WORST_RAW)
    ctx["caller"] = Untrusted("+" + "9" * max(15, n - 1), _WORST_RAW)
    for name in _DATETIME_FIELDS:
        ctx[name] = _WORST_DT
    ctx["now"] = _WORST_DT
    ctx["vars"] = _WorstVars(untrusted=untrusted)
    if link is not None:
        ctx["link"] = link
        ctx["recording_link"] = link("https://recording.invalid/")
    # the same wall-clock digits in every zone: the longest names are what matter
    return {
        k: (v.replace(tzinfo=ZoneInfo(timezone)) if isinstance(v, datetime) else v)
        for k, v in ctx.items()
    }


def _worst_case(
    name: str, template: Template, tags: frozenset[str], timezone: str, link: LinkFactory | None,
    untrusted: UntrustedPolicy,
) -> WorstCase:
    full = _worst_context(timezone, link, untrusted)
    try:
        worst_text = _render(name, template, full)
    except TemplateRenderError as exc:
        raise TemplateProblem(f"cannot be rendered even with every value present: {exc.reason}")
    worst = analyze(worst_text)
    required: list[str] = []
    # A tag that may be missing on a real call: render without it to learn whether the
    # template copes (default(), `is defined`) and how long the fallback text is.
    for tag in sorted(tags):
        if tag in ("now", "link", "trigger", "call_id", "direction", "disposition"):
            continue
        ctx = dict(full)
        if tag.startswith("vars."):
            ctx["vars"] = _WorstVars(missing=tag[5:], untrusted=untrusted)
        elif tag in ctx and tag not in ("wait_seconds", "talk_seconds", "duration_seconds"):
            del ctx[tag]
        else:
            continue
        try:
            text = _render(name, template, ctx)
        except TemplateRenderError:
            required.append(tag)
            continue
        info = analyze(text)
        if (info.segments, info.units) > (worst.segments, worst.units):
            worst_text, worst = text, info
    nongsm = dict(full)
    for name in FREE_TEXT_FIELDS:
        v = nongsm.get(name)
        if isinstance(v, Untrusted):
            nongsm[name] = Untrusted(_nongsm(str(v), True), v.raw)
        elif isinstance(v, str):
            nongsm[name] = _nongsm(v, True)
    nongsm["vars"] = _WorstVars(untrusted=untrusted, non_gsm=True)
    try:
        non_gsm: SmsInfo | None = analyze(_render(name, template, nongsm))
    except TemplateRenderError:
        non_gsm = None
    return WorstCase(worst_text, worst, tuple(required), non_gsm)


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
        template = _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template error: {exc.message}", exc.lineno) from None
    link = reserved_link(public_base_url) if public_base_url else None
    worst = _worst_case(name, template, tags, timezone, link, untrusted)
    return CompiledTemplate(
        name=name,
        source=source,
        template=template,
        tags=tags,
        uses_link=uses_link,
        worst=worst,
        promotional=promotional_words(source),
    )
