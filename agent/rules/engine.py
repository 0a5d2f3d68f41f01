"""The rule engine (pure): match a call record against the rules, pick recipients, render texts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

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
from agent.rules.match import failed_condition
from agent.rules.schedule import due_at
from agent.rules.templates import (
    LinkFactory,
    TemplateRenderError,
    TooLongError,
    render_measured,
    reserved_link,
)
from agent.sms.encoding import SmsInfo
from agent.sms.numbers import classify
from agent.sms.recording import RECORDING_VAR, call_ref


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """Why one rule did or did not fire for a call (``aftercall explain``)."""

    rule: str
    matched: bool
    reason: str | None  # the first condition that failed, as a sentence; None when matched
    decisions: tuple[Decision, ...] = ()
    skipped: tuple[str, ...] = ()  # recipients an earlier rule already took


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
) -> tuple[str | None, SmsInfo | None, str | None, bool, tuple[ShortLink, ...]]:
    """(text, its encoding and segments, error, too long, the tracked links the text holds:
    they travel with it)."""
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
        text, info = render_measured(
            rules.templates[name], record, timezone=d.timezone, now=now,
            link=recording if link is not None else None, untrusted=d.untrusted_policy(),
            max_segments=tpl.max_segments, over_segments=rule.over_segments, recording=signed)
    except TemplateRenderError as exc:
        return None, None, exc.reason, isinstance(exc, TooLongError), ()
    return text, info, None, False, tuple(made)


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
    rendered: dict[str, tuple[str | None, SmsInfo | None, str | None, bool,
                              tuple[ShortLink, ...]]] = {}
    multilingual = len(language.variants(rules.config, rule.send.template)) > 1
    out: list[Decision] = []
    for kind, fixed in targets:
        number, why = _number(kind, fixed, record, d.region)
        choice = language.choose(rules.config, rule.send.template, record, kind, number,
                                 preferences.get(number) if number else None)
        name = choice.template
        if name not in rendered:  # one rendering per variant, shared by its recipients
            rendered[name] = _render(rules, rule, name, record, now, link)
        text, measured, error, too_long, made = rendered[name]
        if when is not None and error is None:
            error = when  # the calendar never opens: nothing to schedule
        tpl = rules.config.templates[name]
        info = measured or rules.templates[name].worst.info
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
