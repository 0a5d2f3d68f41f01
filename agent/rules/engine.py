"""The rule engine (pure): match a call record against the rules, pick recipients, render texts."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from agent.calls.state import extension as agent_extension
from agent.models import (
    CallRecord,
    Decision,
    RecipientKind,
    RuleOutcome,
    ShortLink,
    SuppressReason,
    Trigger,
)
from agent.rules import language, schema
from agent.rules.loader import RuleSet
from agent.rules.schedule import due_at
from agent.rules.templates import (
    LinkFactory,
    TemplateRenderError,
    TooLongError,
    render_call,
    reserved_link,
)
from agent.sms.encoding import analyze
from agent.sms.recording import RECORDING_VAR, call_ref
from agent.sms.numbers import classify

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """Why one rule did or did not fire for a call (``aftercall explain``)."""

    rule: str
    matched: bool
    reason: str | None  # the first condition that failed, as a sentence; None when matched
    decisions: tuple[Decision, ...] = ()
    skipped: tuple[str, ...] = ()  # recipients an earlier rule already took


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


def _with_directory(rules: RuleSet, record: CallRecord) -> CallRecord:
    """Fill agent_name / agent_number from the agents directory when AMI did not."""
    entry = rules.config.agents.get(agent_extension(record.agent) or "") or rules.config.agents.get(
        record.agent or ""
    )
    if entry is None:
        return record
    return dataclasses.replace(
        record,
        agent_name=record.agent_name or entry.name,
        agent_number=record.agent_number or entry.mobile,
    )


def _quiet_hours(rules: RuleSet, rule: schema.Rule) -> tuple[str, str, str] | None:
    base, over = rules.defaults.quiet_hours, rule.quiet_hours
    start = (over.from_ if over else None) or (base.from_ if base else None)
    end = (over.to if over else None) or (base.to if base else None)
    action = (over.action if over else None) or (base.action if base else "defer")
    if start is None or end is None:
        return None
    return (f"{start:%H:%M}", f"{end:%H:%M}", action)


def _recipients(rule: schema.Rule) -> list[tuple[RecipientKind, str | None]]:
    out: list[tuple[RecipientKind, str | None]] = []
    for target in rule.send.to:
        if target in ("caller", "both"):
            out.append((RecipientKind.CALLER, None))
        if target in ("agent", "both"):
            out.append((RecipientKind.AGENT, None))
        if target not in ("caller", "agent", "both"):
            out.append((RecipientKind.FIXED, target))
    return list(dict.fromkeys(out))


def _number(
    kind: RecipientKind, fixed: str | None, record: CallRecord, region: str
) -> tuple[str | None, str | None]:
    """(E.164 number, why there is none)."""
    if kind is RecipientKind.FIXED:
        return fixed, None
    if kind is RecipientKind.CALLER:
        info = classify(record.caller, region)
        return (info.e164, None) if info.reachable else (None, f"caller: {info.detail}")
    if record.agent_number is None:
        who = f"agent {record.agent}" if record.agent else "the call"
        return None, f"{who} has no mobile (record or agents directory)"
    info = classify(record.agent_number, region)
    return (info.e164, None) if info.reachable else (None, f"agent mobile: {info.detail}")


def _render(
    rules: RuleSet, rule: schema.Rule, name: str, record: CallRecord, now: datetime,
    link: LinkFactory | None,
) -> tuple[str | None, str | None, bool, tuple[ShortLink, ...]]:
    """(text, error, too long, the tracked links the text holds: they travel with it)."""
    d = rules.defaults
    tpl = rules.config.templates[name]
    made: list[ShortLink] = []

    def recording(url: str) -> str:
        short = link(url)  # type: ignore[misc]
        if isinstance(short, ShortLink) and short not in made:
            made.append(short)
        return short

    signed = None
    if d.recordings is not None and d.recordings.on and d.public_base_url and "recording_link" in (
            rules.templates[name].tags):
        signed = d.recordings.signer(d.public_base_url).url(
            call_ref(record.pbx, record.call_id), record.vars.get(RECORDING_VAR), now)
    try:
        text = render_call(rules.templates[name], record, timezone=d.timezone, now=now,
                           link=recording if link is not None else None,
                           untrusted=d.untrusted_policy(), max_segments=tpl.max_segments,
                           over_segments=rule.over_segments, recording=signed)
    except TemplateRenderError as exc:
        return None, exc.reason, isinstance(exc, TooLongError), ()
    return text, None, False, tuple(made)


def _due(rules: RuleSet, rule: schema.Rule, record: CallRecord,
         now: datetime) -> tuple[datetime | None, str | None]:
    """(When a delayed/scheduled text is due, why it cannot be), both None for "at once"."""
    send = rule.send
    if send.delay is None and send.at is None:
        return None, None
    hours = rules.defaults.business_hours
    calendar = hours.calendar(rules.defaults.timezone) if hours else None
    at = due_at(record.ended_at or now, send.delay, send.at == "next_open", calendar)
    if at is None:
        return None, "business_hours: no opening within a year"
    return at, None


def _decisions(
    rules: RuleSet,
    rule: schema.Rule,
    record: CallRecord,
    now: datetime,
    link: LinkFactory | None,
    targets: list[tuple[RecipientKind, str | None]],
    preferences: Mapping[str, str],
) -> tuple[Decision, ...]:
    d = rules.defaults
    max_age = rule.max_age or d.max_age
    not_before, when = _due(rules, rule, record, now)
    rendered: dict[str, tuple[str | None, str | None, bool, tuple[ShortLink, ...]]] = {}
    multilingual = len(language.variants(rules.config, rule.send.template)) > 1
    out: list[Decision] = []
    for kind, fixed in targets:
        number, why = _number(kind, fixed, record, d.region)
        choice = language.choose(rules.config, rule.send.template, record, kind, number,
                                 preferences.get(number) if number else None)
        name = choice.template
        if name not in rendered:  # one rendering per variant, shared by its recipients
            rendered[name] = _render(rules, rule, name, record, now, link)
        text, error, too_long, made = rendered[name]
        if when is not None and error is None:
            error = when  # the calendar never opens: nothing to schedule
        tpl = rules.config.templates[name]
        info = analyze(text) if text is not None else rules.templates[name].worst.info
        suppress = (
            SuppressReason.INVALID_NUMBER
            if number is None
            else SuppressReason.TOO_LONG
            if too_long
            else SuppressReason.TEMPLATE_ERROR
            if error is not None
            else None
        )
        out.append(
            Decision(
                call_id=record.call_id,
                rule=rule.name,
                trigger=record.trigger,
                recipient=kind,
                number=number,
                template=name,
                gateway=rule.send.gateway or d.gateway,
                sender_id=rule.send.sender_id or d.sender_id,
                text=text,
                encoding=info.encoding,
                segments=info.segments,
                category=tpl.category,
                dlt_template_id=tpl.dlt_template_id,
                dlt_entity_id=tpl.dlt_entity_id or d.dlt_entity_id,
                cooldown_seconds=rule.cooldown.total_seconds() if rule.cooldown else None,
                quiet_hours=_quiet_hours(rules, rule),
                timezone=d.timezone,
                max_age_seconds=max_age.total_seconds() if max_age else None,
                suppress=suppress,
                detail="; ".join(x for x in (why, error and f"template: {error}") if x) or None,
                call_ended_at=record.ended_at,
                links=made if text is not None else (),
                pbx=record.pbx,
                language=f"{name}: {choice.why}" if multilingual else None,
                spend_caps=(rule.spend.daily, rule.spend.monthly) if rule.spend else None,
                not_before=not_before,
                unless_called_again=bool(rule.unless and rule.unless.called_again),
            )
        )
    return tuple(out)


def explain(
    rules: RuleSet,
    record: CallRecord,
    *,
    now: datetime | None = None,
    link: LinkFactory | None = None,
    preferences: Mapping[str, str] | None = None,
) -> list[RuleTrace]:
    """Every rule in order: matched (with its decisions) or the first condition that failed.
    The first matching rule per recipient wins, unless it says ``continue: true``.
    ``preferences``: number -> the language it asked for (a reply keyword), when known."""
    now = now or datetime.now(UTC)
    if link is None and rules.defaults.public_base_url:
        link = reserved_link(rules.defaults.public_base_url)
    record = _with_directory(rules, record)
    taken: dict[tuple[RecipientKind, str | None], str] = {}
    traces: list[RuleTrace] = []
    for rule in rules.rules:
        if not rule.enabled:
            traces.append(RuleTrace(rule.name, False, "rule is disabled (enabled: false)"))
            continue
        reason = failed_condition(rule, rules, record, now)
        if reason is not None:
            traces.append(RuleTrace(rule.name, False, reason))
            continue
        targets = [t for t in _recipients(rule) if t not in taken]
        skipped = tuple(
            f"{kind.value}{f' {fixed}' if fixed else ''}: already taken by rule {taken[t]!r}"
            for t in _recipients(rule)
            if t in taken
            for kind, fixed in (t,)
        )
        decisions = (_decisions(rules, rule, record, now, link, targets, preferences or {})
                     if targets else ())
        if not rule.continue_:
            for target in targets:
                taken[target] = rule.name
        traces.append(RuleTrace(rule.name, True, None, decisions, skipped))
    return traces


def rule_outcomes(rules: RuleSet, trigger: Trigger, traces: list[RuleTrace]) -> list[RuleOutcome]:
    """What to keep of ``explain`` for the calls view: the rules on this trigger (the others
    only say "wrong trigger"), without the decisions (those are the message rows)."""
    on = {r.name for r in rules.rules if r.on == trigger.value}
    return [RuleOutcome(t.rule, t.matched, t.reason, t.skipped, trigger)
            for t in traces if t.rule in on]


def decide(
    rules: RuleSet,
    record: CallRecord,
    *,
    now: datetime | None = None,
    link: LinkFactory | None = None,
    preferences: Mapping[str, str] | None = None,
) -> list[Decision]:
    """The decisions for one call record, one per (matching rule, recipient)."""
    return [d for trace in explain(rules, record, now=now, link=link, preferences=preferences)
            for d in trace.decisions]
