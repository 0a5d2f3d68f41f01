"""The longest text a template can produce, measured once when rules.yaml is loaded: the segment
budget check (``check``, DLT patterns) needs it before any call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Template

from agent.sms.encoding import SmsInfo, analyze
from agent.sms.untrusted import (
    DEFAULT_POLICY,
    UntrustedPolicy,
)
from agent.rules.templating import (
    DATETIME_FIELDS,
    LinkFactory,
    TemplateProblem,
    TemplateRenderError,
    Untrusted,
    Vars,
    render,
)


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
WORST_RAW = "W" * 256


class WorstVars(Vars):
    __slots__ = ("_missing", "_non_gsm", "untrusted_value")

    def __init__(self, missing: str | None = None, untrusted: UntrustedPolicy = DEFAULT_POLICY,
                 non_gsm: bool = False):
        super().__init__({})
        self._missing = missing
        self.untrusted_value = untrusted
        self._non_gsm = non_gsm

    def _get(self, key: str) -> Any:
        if key == self._missing:
            return None
        if key in self.untrusted_value.vars:
            n = self.untrusted_value.max_length
            return Untrusted(_nongsm(_WORST_VAR[:n].ljust(n, "V"), self._non_gsm), WORST_RAW)
        return _nongsm(_WORST_VAR, self._non_gsm)


# A character outside GSM-7 (Devanagari A): one of them in a free-text value (a caller's or an
# agent's name, a dialplan variable) turns the whole text into UCS-2.
NON_GSM_CHAR = "\u0905"


FREE_TEXT_FIELDS = ("caller_name", "agent_name")


def _nongsm(value: str, on: bool) -> str:
    return NON_GSM_CHAR + value[1:] if on and value else value


@dataclass(frozen=True, slots=True)
class WorstCase:
    text: str  # the longest rendering found
    info: SmsInfo
    required: tuple[str, ...]  # merge tags whose absence makes rendering fail (message suppressed)
    # The same with a non-GSM character in every free-text value (names, vars): what a
    # Devanagari caller name does to the encoding and segment count.
    non_gsm: SmsInfo | None = None


def worst_context(
    timezone: str, link: LinkFactory | None, untrusted: UntrustedPolicy
) -> dict[str, Any]:
    ctx = dict(_WORST_VALUES)
    # Caller-controlled values are cut to the budget at send time: that is their worst case.
    n = untrusted.max_length
    ctx["caller_name"] = Untrusted("W" * n, WORST_RAW)
    ctx["caller"] = Untrusted("+" + "9" * max(15, n - 1), WORST_RAW)
    for name in DATETIME_FIELDS:
        ctx[name] = _WORST_DT
    ctx["now"] = _WORST_DT
    ctx["vars"] = WorstVars(untrusted=untrusted)
    if link is not None:
        ctx["link"] = link
        ctx["recording_link"] = link("https://recording.invalid/")
    # the same wall-clock digits in every zone: the longest names are what matter
    return {
        k: (v.replace(tzinfo=ZoneInfo(timezone)) if isinstance(v, datetime) else v)
        for k, v in ctx.items()
    }


def worst_case(
    name: str, template: Template, tags: frozenset[str], timezone: str, link: LinkFactory | None,
    untrusted: UntrustedPolicy,
) -> WorstCase:
    full = worst_context(timezone, link, untrusted)
    try:
        worst_text = render(name, template, full)
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
            ctx["vars"] = WorstVars(missing=tag[5:], untrusted=untrusted)
        elif tag in ctx and tag not in ("wait_seconds", "talk_seconds", "duration_seconds"):
            del ctx[tag]
        else:
            continue
        try:
            text = render(name, template, ctx)
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
    nongsm["vars"] = WorstVars(untrusted=untrusted, non_gsm=True)
    try:
        non_gsm: SmsInfo | None = analyze(render(name, template, nongsm))
    except TemplateRenderError:
        non_gsm = None
    return WorstCase(worst_text, worst, tuple(required), non_gsm)
