"""Send policies: every suppress reason, their order, quiet hours across midnight and zones."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.models import Decision, RecipientKind, SuppressReason, Trigger
from agent.sms.policy import (
    AudienceLimits,
    Limits,
    PolicyOutcome,
    SentCounts,
    evaluate,
    parse_rate,
    quiet_window_end,
)

NOW = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 11:30 in Asia/Kolkata

BASE = Decision(
    call_id="c1",
    rule="support-followup",
    trigger=Trigger.CALL_COMPLETED,
    recipient=RecipientKind.CALLER,
    number="+919812345678",
    template="t",
    gateway="smsc",
    sender_id="ACMECO",
    text="hello",
    call_ended_at=NOW - timedelta(seconds=5),
)


def run(decision: Decision = BASE, **facts: Any) -> PolicyOutcome:
    args: dict[str, Any] = {
        "now": NOW,
        "opted_out": False,
        "dnd": False,
        "last_sent_at": None,
        "limits": Limits(),
        "dry_run": False,
    }
    args.update(facts)
    return evaluate(decision, **args)


def test_clean_decision_is_sent() -> None:
    assert run() == PolicyOutcome("send")


@pytest.mark.parametrize("reason", [SuppressReason.INVALID_NUMBER, SuppressReason.TEMPLATE_ERROR])
def test_engine_suppression_wins_over_everything(reason: SuppressReason) -> None:
    d = replace(BASE, suppress=reason, detail="why")
    out = run(d, opted_out=True, dnd=True, dry_run=True)
    assert (out.action, out.reason, out.detail) == ("suppress", reason, "why")


def test_missing_number_or_text_is_suppressed_even_without_engine_reason() -> None:
    assert run(replace(BASE, number=None)).reason is SuppressReason.INVALID_NUMBER
    assert run(replace(BASE, text=None)).reason is SuppressReason.TEMPLATE_ERROR


def test_max_age() -> None:
    d = replace(BASE, max_age_seconds=900, call_ended_at=NOW - timedelta(seconds=901))
    out = run(d, opted_out=True)
    assert out.reason is SuppressReason.MAX_AGE and "901s" in (out.detail or "")
    assert run(replace(d, call_ended_at=NOW - timedelta(seconds=899))).action == "send"


def test_opt_out_before_dnd() -> None:
    assert run(opted_out=True, dnd=True).reason is SuppressReason.OPT_OUT


def test_dnd_blocks_promotional_always_and_transactional_unless_allowed() -> None:
    allow = Limits(transactional_bypasses_dnd=True)
    assert run(dnd=True).reason is SuppressReason.DND
    assert run(dnd=True, limits=allow).action == "send"
    promo = replace(BASE, category="promotional")
    assert run(promo, dnd=True, limits=allow).reason is SuppressReason.DND


def test_cooldown() -> None:
    d = replace(BASE, cooldown_seconds=86400)
    out = run(
        d,
        last_sent_at=NOW - timedelta(hours=23),
        sent=SentCounts(number=99),
        limits=Limits.parse(per_number="3/1h"),
    )
    assert out.reason is SuppressReason.COOLDOWN
    assert run(d, last_sent_at=NOW - timedelta(hours=25)).action == "send"
    assert run(replace(BASE, cooldown_seconds=None), last_sent_at=NOW).action == "send"


def test_rate_limits_per_number_global_and_daily() -> None:
    limits = Limits.parse(per_number="3/1h", global_="100/1m", daily="500/1d")
    assert run(sent=SentCounts(2, 99, 499), limits=limits).action == "send"
    out = run(sent=SentCounts(number=3), limits=limits)
    assert out.reason is SuppressReason.RATE_LIMITED and "3/3600s" in (out.detail or "")
    out = run(sent=SentCounts(global_=100), limits=limits)
    assert out.reason is SuppressReason.RATE_LIMITED and "global" in (out.detail or "")
    out = run(sent=SentCounts(daily=500), limits=limits)
    assert out.reason is SuppressReason.RATE_LIMITED and "daily" in (out.detail or "")


def test_agents_are_held_to_their_own_limits() -> None:
    limits = Limits.parse(global_="10/1m", agents=AudienceLimits(global_=parse_rate("50/1m")))
    to_agent = replace(BASE, recipient=RecipientKind.AGENT)
    assert run(to_agent, sent=SentCounts(global_=10), limits=limits).action == "send"
    out = run(to_agent, sent=SentCounts(global_=50), limits=limits)
    assert out.reason is SuppressReason.RATE_LIMITED and "(agents)" in (out.detail or "")
    assert run(sent=SentCounts(global_=10), limits=limits).reason is SuppressReason.RATE_LIMITED


@pytest.mark.parametrize(
    ("number", "country"),
    [("+88216123456", "unknown"), ("+2348031234567", "NG"), ("+447012345678", "GB"),
     ("+15417543010", "US")],
)
def test_destination_outside_allowed_countries_is_refused(number: str, country: str) -> None:
    limits = Limits(allowed_countries=frozenset({"IN"}))
    out = run(replace(BASE, number=number), limits=limits, opted_out=True)
    assert out.reason is SuppressReason.COUNTRY_NOT_ALLOWED
    assert f"country {country} " in (out.detail or "")
    assert run(limits=limits).action == "send"
    assert run(replace(BASE, number=number), limits=Limits()).action == "send"


def test_quiet_hours_defer_until_window_end_in_local_zone() -> None:
    # 22:30 in Kolkata (17:00 UTC): inside 21:00-09:00, which ends at 09:00 IST = 03:30 UTC.
    now = datetime(2024, 5, 1, 17, 0, tzinfo=UTC)
    d = replace(
        BASE, quiet_hours=("21:00", "09:00", "defer"), timezone="Asia/Kolkata", call_ended_at=now
    )
    out = run(d, now=now)
    assert (out.action, out.reason) == ("defer", SuppressReason.QUIET_HOURS)
    assert out.not_before == datetime(2024, 5, 2, 3, 30, tzinfo=UTC)
    # 02:00 IST the next morning: same window, same end.
    early = datetime(2024, 5, 1, 20, 30, tzinfo=UTC)
    assert run(d, now=early).not_before == datetime(2024, 5, 2, 3, 30, tzinfo=UTC)
    # 11:30 IST is outside.
    assert run(replace(d, call_ended_at=NOW)).action == "send"


def test_quiet_hours_drop_and_send_actions() -> None:
    now = datetime(2024, 5, 1, 17, 0, tzinfo=UTC)
    d = replace(
        BASE, quiet_hours=("21:00", "09:00", "drop"), timezone="Asia/Kolkata", call_ended_at=now
    )
    assert run(d, now=now).reason is SuppressReason.QUIET_HOURS
    assert run(replace(d, quiet_hours=("21:00", "09:00", "send")), now=now).action == "send"


def test_dry_run_is_last_and_covers_defer() -> None:
    assert run(dry_run=True).reason is SuppressReason.DRY_RUN
    assert run(dry_run=True, opted_out=True).reason is SuppressReason.OPT_OUT
    now = datetime(2024, 5, 1, 17, 0, tzinfo=UTC)
    d = replace(
        BASE, quiet_hours=("21:00", "09:00", "defer"), timezone="Asia/Kolkata", call_ended_at=now
    )
    out = run(d, now=now, dry_run=True)
    assert out.reason is SuppressReason.DRY_RUN and "defer" in (out.detail or "")


def test_bad_quiet_hours_and_zone_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="quiet_hours.from '25:00'"):
        run(replace(BASE, quiet_hours=("25:00", "09:00", "defer")))
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Base'"):
        run(replace(BASE, quiet_hours=("21:00", "09:00", "defer"), timezone="Mars/Base"))


@pytest.mark.parametrize(
    ("spec", "count", "seconds"),
    [("3/1h", 3, 3600), ("100/1m", 100, 60), ("10/s", 10, 1), (" 5 / 2d ", 5, 172800)],
)
def test_parse_rate(spec: str, count: int, seconds: int) -> None:
    r = parse_rate(spec)
    assert (r.count, r.window) == (count, timedelta(seconds=seconds))


@pytest.mark.parametrize("spec", ["", "3", "3/1w", "0/1h", "3/0h", "-1/1h", "three/1h"])
def test_parse_rate_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate(spec)


def test_window_end_across_dst_change() -> None:
    # New York springs forward on 2024-03-10; 22:00-07:00 still ends at 07:00 local (EDT).
    tz = ZoneInfo("America/New_York")
    now = datetime(2024, 3, 10, 4, 0, tzinfo=UTC)  # 23:00 EST on the 9th
    assert quiet_window_end(now, time(22), time(7), tz) == datetime(2024, 3, 10, 11, 0, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    start=st.times(),
    end=st.times(),
    zone=st.sampled_from(
        ["UTC", "Asia/Kolkata", "America/New_York", "Europe/London", "Australia/Lord_Howe"]
    ),
)
def test_window_end_is_after_now_and_within_a_day(
    now: datetime, start: time, end: time, zone: str
) -> None:
    start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
    tz = ZoneInfo(zone)
    ends = quiet_window_end(now, start, end, tz)
    local = now.astimezone(tz).time().replace(tzinfo=None)
    inside = (
        (start <= local < end)
        if start < end
        else (start != end and (local >= start or local < end))
    )
    assert (ends is not None) == inside
    if ends is not None:
        assert now < ends <= now + timedelta(hours=25)
