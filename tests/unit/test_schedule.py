"""Delayed and scheduled sends, rules level: the business-hours calendar, the schema, and the
policy's deferral (quiet hours at the scheduled time, max_age counted from it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from agent.errors import RulesError
from agent.models import CallRecord, Decision, Disposition, RecipientKind, SuppressReason, Trigger
from agent.rules.engine import decide
from agent.rules.loader import load_rules_text
from agent.rules.schedule import Calendar, due_at
from agent.sms.policy import Limits, evaluate

IST = "Asia/Kolkata"
CAL = Calendar({d: (time(9), time(18)) for d in ("mon", "tue", "wed", "thu", "fri")}
               | {"sat": (time(10), time(13))}, frozenset({date(2025, 8, 15)}), IST)


def ist(day: int, hh: int, mm: int = 0) -> datetime:
    """A time in August 2025, Kolkata (14 Aug is a Thursday), as UTC."""
    return datetime(2025, 8, day, hh, mm, tzinfo=UTC) - timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(("at", "want"), [
    (ist(14, 11), ist(14, 11)),          # open: at once
    (ist(14, 7), ist(14, 9)),            # before opening: at opening
    (ist(14, 18), ist(16, 10)),          # closing time: Friday 15th is a holiday -> Saturday
    (ist(16, 13, 30), ist(18, 9)),       # Saturday after closing; Sunday closed -> Monday
    (ist(17, 12), ist(18, 9)),           # Sunday
])
def test_next_open(at: datetime, want: datetime) -> None:
    assert CAL.next_open(at) == want


def test_due_at_and_a_calendar_that_never_opens() -> None:
    assert due_at(ist(14, 17, 50), timedelta(minutes=30), False, CAL) == ist(14, 18, 20)
    assert due_at(ist(14, 17, 50), timedelta(minutes=30), True, CAL) == ist(16, 10)
    closed = Calendar({"mon": (time(9), time(10))},
                      frozenset(date(2025, 8, 1) + timedelta(days=n) for n in range(500)), IST)
    assert closed.next_open(ist(14, 12)) is None


HEAD = """\
version: 1
defaults:
  region: IN
  timezone: Asia/Kolkata
  sender_id: ACMECO
  gateway: smsc
  max_age: 15m
{extra}
gateways: {{smsc: {{type: smpp, host: h, system_id: x}}}}
templates: {{t: {{text: hi}}}}
rules:
{rules}
"""
HOURS = "  business_hours: {open: {mon-fri: '09:00-18:00', sat: '10:00-13:00'}, " \
        "holidays: [2025-08-15]}"
LATER = ("  - name: later\n    send: {template: t, delay: 30m, at: next_open}\n"
         "    unless: {called_again: true}")


def load(extra: str = HOURS, rules: str = LATER):  # type: ignore[no-untyped-def]
    return load_rules_text(HEAD.format(extra=extra, rules=rules), "r.yaml", {})


def test_schema_and_loader() -> None:
    rs = load()
    assert rs.rules[0].send.delay == timedelta(minutes=30) and rs.rules[0].send.at == "next_open"
    cal = rs.defaults.business_hours.calendar(IST)  # type: ignore[union-attr]
    assert cal.hours["wed"] == (time(9), time(18)) and "sun" not in cal.hours
    for extra, rules, want in [
        ("", LATER, "r.yaml:13:"),  # at: next_open without business hours
        (HOURS, "  - {name: x, send: {template: t}, unless: {called_again: true}}",
         "unless cancels a scheduled text"),
        ("  business_hours: {open: {mon: '18:00-09:00'}}", LATER, "close before they open"),
        ("  business_hours: {open: {mon-fri: '09:00-18:00', fri: '10:00-11:00'}}", LATER,
         "fri is given opening hours twice"),
        ("  business_hours: {open: {mon: 9-5}}", LATER, "bad time"),
    ]:
        with pytest.raises(RulesError) as info:
            load(extra, rules)
        assert want in str(info.value), (extra, rules, str(info.value))


def test_the_engine_schedules_from_the_end_of_the_call() -> None:
    record = CallRecord(call_id="1", caller="+919812345678", disposition=Disposition.MISSED,
                        ended_at=ist(14, 17, 50))
    [d] = decide(load(), record, now=ist(14, 17, 51))
    assert (d.not_before, d.unless_called_again) == (ist(16, 10), True)


BASE = Decision(call_id="1", rule="later", trigger=Trigger.CALL_COMPLETED,
                recipient=RecipientKind.CALLER, number="+919812345678", template="t",
                gateway="smsc", sender_id="ACMECO", text="hi", timezone=IST,
                call_ended_at=ist(14, 17, 50), max_age_seconds=900, not_before=ist(14, 18, 20))


def run(d: Decision, now: datetime):  # type: ignore[no-untyped-def]
    return evaluate(d, now=now, opted_out=False, dnd=False, last_sent_at=None,
                    limits=Limits(), dry_run=False)


def test_policy_defers_to_the_scheduled_time() -> None:
    out = run(BASE, ist(14, 17, 51))
    assert (out.action, out.reason, out.not_before) == ("defer", SuppressReason.SCHEDULED,
                                                        ist(14, 18, 20))
    assert out.detail == "scheduled for 2025-08-14T18:20:00+05:30"
    out = run(replace(BASE, unless_called_again=True), ist(14, 17, 51))
    assert out.reason is SuppressReason.SCHEDULED_UNLESS_CALLED
    assert out.detail is not None and out.detail.endswith("unless the number calls again and "
                                                          "is answered")
    # quiet hours covering the scheduled time push it to their end; drop drops it
    night = replace(BASE, quiet_hours=("18:00", "21:00", "defer"))
    assert run(night, ist(14, 17, 51)).not_before == ist(14, 21)
    drop = replace(BASE, quiet_hours=("18:00", "21:00", "drop"))
    assert run(drop, ist(14, 17, 51)).reason is SuppressReason.QUIET_HOURS
    # due: sent; max_age counts from the scheduled time, not from the call
    assert run(BASE, ist(14, 18, 30)).action == "send"
    late = run(BASE, ist(14, 18, 36))
    assert late.reason is SuppressReason.MAX_AGE and late.detail == (
        "was due 960s ago, max_age is 900s")


def test_explain_says_when(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from agent.commands.explain import explain

    (rules := tmp_path / "r.yaml").write_text(HEAD.format(extra=HOURS, rules=LATER))
    record = CallRecord(call_id="1", caller="+919812345678", disposition=Disposition.MISSED,
                        ended_at=ist(14, 17, 50))
    (call := tmp_path / "c.json").write_text(json.dumps(record.to_dict()))
    text, code = explain(rules, call)
    assert code == 0, text
    assert "then policies: scheduled for 2025-08-16T04:30:00+00:00 unless called again" in text
