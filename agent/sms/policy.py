"""Send policies applied after the rule engine: opt-out, DND, cooldown, rate limits, quiet hours."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.models import Decision, SuppressReason

Action = Literal["send", "suppress", "defer"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` messages per ``window``."""

    count: int
    window: timedelta

    def __str__(self) -> str:
        return f"{self.count}/{int(self.window.total_seconds())}s"


def parse_rate(spec: str) -> RateLimit:
    """Parse ``"3/1h"``, ``"100/1m"``, ``"10/s"`` (a missing multiplier means 1)."""
    m = _RATE.match(spec)
    if m is None:
        raise ValueError(f"rate limit {spec!r}: expected COUNT/WINDOW such as '3/1h' or '100/1m'")
    count, mult, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
    if count < 1 or mult < 1:
        raise ValueError(f"rate limit {spec!r}: count and window must be positive")
    return RateLimit(count, timedelta(seconds=mult * _UNITS[unit]))


@dataclass(frozen=True, slots=True)
class Limits:
    """Operator-wide policy settings (the per-rule ones travel in the Decision)."""

    per_number: RateLimit | None = None
    global_: RateLimit | None = None
    # India's TRAI rules (and others) let transactional traffic reach DND-registered numbers;
    # whether this operator's registrations allow it is their call, so it is opt-in.
    transactional_bypasses_dnd: bool = False

    @classmethod
    def parse(
        cls,
        *,
        per_number: str | None = None,
        global_: str | None = None,
        transactional_bypasses_dnd: bool = False,
    ) -> Limits:
        return cls(
            per_number=parse_rate(per_number) if per_number else None,
            global_=parse_rate(global_) if global_ else None,
            transactional_bypasses_dnd=transactional_bypasses_dnd,
        )


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    action: Action
    reason: SuppressReason | None = None
    not_before: datetime | None = None  # for "defer": when the message may be sent (UTC)
    detail: str | None = None


SEND = PolicyOutcome("send")


def _suppress(reason: SuppressReason, detail: str | None) -> PolicyOutcome:
    return PolicyOutcome("suppress", reason, None, detail)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def evaluate(
    decision: Decision,
    *,
    now: datetime,
    opted_out: bool,
    dnd: bool,
    last_sent_at: datetime | None,
    sent_last_window_number: int,
    sent_last_window_global: int,
    limits: Limits,
    dry_run: bool,
) -> PolicyOutcome:
    """Decide whether one Decision is sent now, later, or never. The first reason wins, in the
    documented order; naive datetimes are taken as UTC."""
    now = _aware(now)
    if decision.suppress is not None:
        return _suppress(decision.suppress, decision.detail)
    if decision.number is None:
        return _suppress(
            SuppressReason.INVALID_NUMBER, decision.detail or "recipient has no number"
        )
    if decision.text is None:
        return _suppress(
            SuppressReason.TEMPLATE_ERROR, decision.detail or "template did not render"
        )

    if decision.max_age_seconds is not None and decision.call_ended_at is not None:
        age = (now - _aware(decision.call_ended_at)).total_seconds()
        if age > decision.max_age_seconds:
            return _suppress(
                SuppressReason.MAX_AGE,
                f"call ended {age:.0f}s ago, max_age is {decision.max_age_seconds:.0f}s",
            )

    if opted_out:
        return _suppress(SuppressReason.OPT_OUT, "recipient opted out")

    if dnd:
        allowed = decision.category == "transactional" and limits.transactional_bypasses_dnd
        if not allowed:
            return _suppress(SuppressReason.DND, f"number is on the DND list ({decision.category})")

    if decision.cooldown_seconds is not None and last_sent_at is not None:
        since = (now - _aware(last_sent_at)).total_seconds()
        if since < decision.cooldown_seconds:
            return _suppress(
                SuppressReason.COOLDOWN,
                f"rule {decision.rule} texted this number {since:.0f}s ago, "
                f"cooldown is {decision.cooldown_seconds:.0f}s",
            )

    if limits.per_number is not None and sent_last_window_number >= limits.per_number.count:
        return _suppress(
            SuppressReason.RATE_LIMITED,
            f"{sent_last_window_number} sent to this number in the window, "
            f"limit {limits.per_number}",
        )
    if limits.global_ is not None and sent_last_window_global >= limits.global_.count:
        return _suppress(
            SuppressReason.RATE_LIMITED,
            f"{sent_last_window_global} sent in the window, global limit {limits.global_}",
        )

    outcome = SEND
    if decision.quiet_hours is not None:
        outcome = _quiet_hours(decision, now)

    if dry_run and outcome.action != "suppress":
        would = "send" if outcome.action == "send" else f"defer until {outcome.not_before}"
        return _suppress(SuppressReason.DRY_RUN, f"dry run: would {would}")
    return outcome


def _parse_hhmm(value: str, what: str) -> time:
    m = _HHMM.match(value)
    if m is None:
        raise ValueError(f"quiet_hours.{what} {value!r}: expected HH:MM (24 h)")
    return time(int(m.group(1)), int(m.group(2)))


def quiet_window_end(now: datetime, start: time, end: time, tz: ZoneInfo) -> datetime | None:
    """If ``now`` falls inside the local window [start, end) (which may cross midnight), return
    the UTC instant the window ends; else None. ``start == end`` is an empty window."""
    if start == end:
        return None
    local = _aware(now).astimezone(tz)
    t = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= t < end
    else:
        inside = t >= start or t < end
    if not inside:
        return None
    day = local.date()
    if t >= end:  # crossing midnight, before it: the window ends tomorrow
        day += timedelta(days=1)
    # Wall-clock end in the zone; a DST gap resolves forward, which only ever defers a little more.
    ends = datetime.combine(day, end, tzinfo=tz)
    return ends.astimezone(UTC)


def _quiet_hours(decision: Decision, now: datetime) -> PolicyOutcome:
    assert decision.quiet_hours is not None
    frm, to, action = decision.quiet_hours
    try:
        tz = ZoneInfo(decision.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"rule {decision.rule}: unknown timezone {decision.timezone!r}") from exc
    ends = quiet_window_end(now, _parse_hhmm(frm, "from"), _parse_hhmm(to, "to"), tz)
    if ends is None or action == "send":
        return SEND
    window = f"quiet hours {frm}-{to} {decision.timezone}"
    if action == "drop":
        return _suppress(SuppressReason.QUIET_HOURS, window)
    if action == "defer":
        return PolicyOutcome("defer", SuppressReason.QUIET_HOURS, ends, f"{window}: deferred")
    raise ValueError(f"rule {decision.rule}: quiet_hours action {action!r} is not defer|drop|send")
