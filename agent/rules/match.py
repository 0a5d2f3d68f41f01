"""Whether a call record meets a rule's ``match:`` (pure): None, or the first condition it fails,
said as a sentence for ``aftercall explain`` and the SMS log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from agent.calls.state import extension as agent_extension
from agent.models import CallRecord
from agent.rules import schema
from agent.rules.ruleset import RuleSet
from agent.sms.numbers import classify

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _digits(number: str | None) -> str:
    return re.sub(r"\D", "", number or "")


def _fmt_seconds(value: float | timedelta) -> str:
    secs = value.total_seconds() if isinstance(value, timedelta) else value
    return f"{secs:g}s"


def _one_of(label: str, value: object, wanted: tuple[str, ...]) -> str:
    shown = (
        "not set" if value in (None, "") else f"{value!r}" if isinstance(value, str) else str(value)
    )
    return f"{label} is {shown}, rule wants one of {list(wanted)}"


def _local_time(rules: RuleSet, record: CallRecord, now: datetime) -> datetime:
    # Business hours are about when the caller rang, not when the rule runs.
    at = record.started_at or record.ended_at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(rules.defaults.timezone))


def _in_window(t: time, start: time, end: time) -> tuple[bool, bool]:
    """(inside, in the part after midnight of a window that crosses it)."""
    if start <= end:
        return start <= t < end, False
    if t >= start:
        return True, False
    return t < end, t < end


def _check_time(m: schema.Match, rules: RuleSet, record: CallRecord, now: datetime) -> str | None:
    if m.time is None and m.days is None:
        return None
    local = _local_time(rules, record, now)
    day = local.weekday()
    tz = rules.defaults.timezone
    if m.time is not None:
        inside, after_midnight = _in_window(local.time(), m.time.from_, m.time.to)
        span = f"{m.time.from_:%H:%M}-{m.time.to:%H:%M}"
        if not inside:
            return f"call time {local:%H:%M} ({tz}) is outside {span}"
        if after_midnight:
            day = (day - 1) % 7  # the window opened the evening before
    if m.days is not None and _WEEKDAYS[day] not in m.days:
        return f"call day {_WEEKDAYS[day]} ({tz}) is not one of {list(m.days)}"
    return None


def _check_vars(wanted: dict[str, schema.VarMatch], record: CallRecord) -> str | None:
    for name, cond in wanted.items():
        value = record.vars.get(name) or None
        if cond.present is not None:
            if (value is not None) != cond.present:
                return (
                    f"vars.{name} is {'set' if value else 'missing'}, rule wants {cond.describe()}"
                )
            continue
        if value is None:
            return f"vars.{name} is missing, rule wants {cond.describe()}"
        if cond.regex is not None and not cond.regex.search(value):
            return f"vars.{name} is {value!r}, rule wants {cond.describe()}"
        if cond.equals is not None and value not in cond.equals:
            return f"vars.{name} is {value!r}, rule wants {cond.describe()}"
    return None


def _check_range(
    label: str, value: float, lo: timedelta | None, hi: timedelta | None, key: str
) -> str | None:
    if lo is not None and value < lo.total_seconds():
        return f"{label} {_fmt_seconds(value)} is under min_{key} {_fmt_seconds(lo)}"
    if hi is not None and value > hi.total_seconds():
        return f"{label} {_fmt_seconds(value)} is over max_{key} {_fmt_seconds(hi)}"
    return None


def wrapup_wait(rules: RuleSet, rule: schema.Rule) -> timedelta:
    """How long after the hangup a call waits for the wrap-up code ``rule`` matches on."""
    return (rule.wrapup or rules.defaults.wrapup).wait


def _check_wrapup(rules: RuleSet, rule: schema.Rule, record: CallRecord) -> str | None:
    wanted = rule.match.wrapup
    if wanted is None:
        return None
    if record.wrapup is None:
        return (f"no wrap-up code came within {_fmt_seconds(wrapup_wait(rules, rule))} of the "
                f"hangup (decided without it), rule wants one of {list(wanted)}")
    if record.wrapup.casefold() not in {w.casefold() for w in wanted}:
        return _one_of("wrap-up code", record.wrapup, wanted)
    return None


def failed_condition(
    rule: schema.Rule, rules: RuleSet, record: CallRecord, now: datetime, *,
    wrapup: bool = True,
) -> str | None:
    """The first condition of ``rule`` that ``record`` fails, as a sentence; None if all hold.
    The wrap-up code is checked last (``wrapup=False``: not at all), so a call waits for one
    only when everything else about the rule holds."""
    if record.trigger.value != rule.on:
        return f"trigger is {record.trigger.value}, rule is on {rule.on}"
    m = rule.match
    if m.queue is not None and record.queue not in m.queue:
        return _one_of("queue", record.queue, m.queue)
    if m.did is not None and _digits(record.did) not in {_digits(d) for d in m.did}:
        return _one_of("did", record.did, m.did)
    if m.agent is not None and not ({record.agent, agent_extension(record.agent)} & set(m.agent)):
        return _one_of("agent", record.agent, m.agent)
    if m.tags is not None:
        have = {t.casefold() for t in record.tags}
        if not have & {t.casefold() for t in m.tags}:
            return f"tags are {list(record.tags)}, rule wants any of {list(m.tags)}"
    if m.direction is not None and record.direction.value not in m.direction:
        return _one_of("direction", record.direction.value, m.direction)
    if m.disposition is not None and record.disposition.value not in m.disposition:
        return _one_of("disposition", record.disposition.value, m.disposition)
    if m.hangup_by is not None:
        by = record.hangup_by.value if record.hangup_by else None
        if by not in m.hangup_by:
            return _one_of("hangup_by", by, m.hangup_by)
    if m.caller_type is not None:
        kind = classify(record.caller, rules.defaults.region).kind
        if kind not in m.caller_type:
            return f"caller type is {kind}, rule wants one of {list(m.caller_type)}"
    reason = (
        _check_range("talk time", record.talk_seconds, m.min_talk, m.max_talk, "talk")
        or _check_range("wait time", record.wait_seconds, m.min_wait, m.max_wait, "wait")
        or _check_time(m, rules, record, now)
    )
    if reason:
        return reason
    if m.vars is not None and (reason := _check_vars(m.vars, record)):
        return reason
    return _check_wrapup(rules, rule, record) if wrapup else None
