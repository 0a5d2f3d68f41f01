"""Send policies applied after the rule engine: opt-out, DND, destination country, cooldown, rate
limits, quiet hours."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.models import Decision, RecipientKind, SuppressReason
from agent.sms.numbers import country_of
from agent.sms.spend import Caps, SpendPolicy, Spent, over_cap

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
class AudienceLimits:
    """The limits on texts to one audience (callers, or agents): per number, all numbers in a
    short window, all numbers in a day. None means no limit."""

    per_number: RateLimit | None = None
    global_: RateLimit | None = None
    daily: RateLimit | None = None

    def all(self) -> tuple[tuple[str, RateLimit], ...]:
        named = (("per_number", self.per_number), ("global", self.global_), ("daily", self.daily))
        return tuple((n, r) for n, r in named if r is not None)


@dataclass(frozen=True, slots=True)
class SentCounts:
    """How many texts this recipient's audience had in each limit's window (ratecount.py)."""

    number: int = 0
    global_: int = 0
    daily: int = 0


NO_COUNTS = SentCounts()


@dataclass(frozen=True, slots=True)
class Limits:
    """Operator-wide policy settings (the per-rule ones travel in the Decision). Callers and
    agents are counted apart, so a pumping burst that spends the callers' budget never stops
    the agents' texts (and the reverse)."""

    callers: AudienceLimits = AudienceLimits()
    agents: AudienceLimits = AudienceLimits()
    # ISO 3166 regions a text may go to; None means anywhere. rules.yaml's default is the
    # region's own country: premium and international ranges are where SMS pumping pays.
    allowed_countries: frozenset[str] | None = None
    # India's TRAI rules (and others) let transactional traffic reach DND-registered numbers;
    # whether this operator's registrations allow it is their call, so it is opt-in.
    transactional_bypasses_dnd: bool = False
    spend: SpendPolicy = SpendPolicy()

    def audience(self, recipient: RecipientKind | str) -> AudienceLimits:
        return self.agents if recipient == RecipientKind.AGENT else self.callers

    @property
    def longest_window(self) -> timedelta:
        windows = [r.window for a in (self.callers, self.agents) for _, r in a.all()]
        return max(windows, default=timedelta(0))

    @classmethod
    def parse(
        cls,
        *,
        per_number: str | None = None,
        global_: str | None = None,
        daily: str | None = None,
        agents: AudienceLimits | None = None,
        allowed_countries: tuple[str, ...] | None = None,
        transactional_bypasses_dnd: bool = False,
    ) -> Limits:
        def rate(spec: str | None) -> RateLimit | None:
            return parse_rate(spec) if spec else None

        return cls(
            callers=AudienceLimits(rate(per_number), rate(global_), rate(daily)),
            agents=agents or AudienceLimits(),
            allowed_countries=frozenset(allowed_countries) if allowed_countries else None,
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
    limits: Limits,
    dry_run: bool,
    sent: SentCounts = NO_COUNTS,
    spent: Spent | None = None,
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

    # A scheduled text's age counts from its scheduled time, not from the call.
    since = decision.not_before or decision.call_ended_at
    if decision.max_age_seconds is not None and since is not None:
        age = (now - _aware(since)).total_seconds()
        if age > decision.max_age_seconds:
            what = "was due" if decision.not_before else "call ended"
            return _suppress(
                SuppressReason.MAX_AGE,
                f"{what} {age:.0f}s ago, max_age is {decision.max_age_seconds:.0f}s",
            )

    if limits.allowed_countries is not None:
        country = country_of(decision.number)
        if country not in limits.allowed_countries:
            allowed = ", ".join(sorted(limits.allowed_countries))
            return _suppress(
                SuppressReason.COUNTRY_NOT_ALLOWED,
                f"destination country {country or 'unknown'} is not in allowed_countries"
                f" ({allowed})",
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

    audience = limits.audience(decision.recipient)
    who = "agents" if audience is limits.agents else "callers"
    for name, limit, count in (
        ("per_number", audience.per_number, sent.number),
        ("global", audience.global_, sent.global_),
        ("daily", audience.daily, sent.daily),
    ):
        if limit is not None and count >= limit.count:
            scope = "to this number" if name == "per_number" else f"to {who}"
            return _suppress(
                SuppressReason.RATE_LIMITED,
                f"{count} sent {scope} in the window, {name} limit {limit} ({who})",
            )

    if spent is not None:
        why = _over_spend(decision, limits.spend, spent)
        if why is not None:
            return _suppress(SuppressReason.SPEND_CAP, why)

    outcome = SEND
    if decision.not_before is not None and _aware(decision.not_before) > now:
        outcome = _scheduled(decision, _aware(decision.not_before))
    elif decision.quiet_hours is not None:
        outcome = _quiet_hours(decision, now)

    if dry_run and outcome.action != "suppress":
        would = "send" if outcome.action == "send" else f"defer until {outcome.not_before}"
        return _suppress(SuppressReason.DRY_RUN, f"dry run: would {would}")
    return outcome


def _over_spend(decision: Decision, spend: SpendPolicy, spent: Spent) -> str | None:
    cost = spend.cost(decision.gateway, decision.number, decision.segments)
    if cost is None:
        return None
    rule = Caps(*decision.spend_caps) if decision.spend_caps else None
    return over_cap(cost, spent, spend.caps, rule, decision.rule, spend.currency)


def _scheduled(decision: Decision, due: datetime) -> PolicyOutcome:
    """Deferred to its scheduled time, or later when quiet hours cover that time."""
    if decision.quiet_hours is not None:
        quiet = _quiet_hours(decision, due)
        if quiet.action == "suppress":
            return quiet
        if quiet.action == "defer" and quiet.not_before is not None:
            due = quiet.not_before
    reason = (SuppressReason.SCHEDULED_UNLESS_CALLED if decision.unless_called_again
              else SuppressReason.SCHEDULED)
    try:
        local = due.astimezone(ZoneInfo(decision.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        local = due
    unless = ", unless the number calls again and is answered" if decision.unless_called_again else ""
    return PolicyOutcome("defer", reason, due, f"scheduled for {local.isoformat()}{unless}")


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
