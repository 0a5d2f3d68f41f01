"""In-memory rate-limit counters and the refusal-burst alarm (pure, fed with timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.models import RecipientKind
from agent.sms.policy import AudienceLimits, Limits, SentCounts, parse_rate
from agent.sms.ratecount import RefusalBurst, SendCounters

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits.parse(
    per_number="3/1h", global_="100/1m", daily="500/1d",
    agents=AudienceLimits(global_=parse_rate("50/1m")),
)


def test_windows_slide_and_audiences_are_apart() -> None:
    c = SendCounters(LIMITS)
    for i in range(3):
        c.add(RecipientKind.CALLER, "+919812345678", T0 + timedelta(seconds=i))
    c.add(RecipientKind.FIXED, "+919800000000", T0)
    c.add(RecipientKind.AGENT, "+919876543210", T0)
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=3)) == SentCounts(3, 4, 4)
    # one minute on: the global window emptied, the hour and the day did not
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=62)) == SentCounts(3, 0, 4)
    assert c.counts("caller", "+919812345678", T0 + timedelta(hours=1, seconds=3)) == SentCounts(
        0, 0, 4)
    assert c.counts("agent", "+919876543210", T0) == SentCounts(0, 1, 0)


def test_seed_then_discard_a_duplicate() -> None:
    c = SendCounters(LIMITS)
    c.seed([("caller", "+919812345678", T0 + timedelta(seconds=s)) for s in (30, 10, 20)])
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=31)).number == 3
    c.add("caller", "+919812345678", T0 + timedelta(seconds=40))
    c.discard("caller", "+919812345678", T0 + timedelta(seconds=40))
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=41)) == SentCounts(3, 3, 3)


def test_memory_is_bounded_by_the_windows() -> None:
    c = SendCounters(Limits.parse(per_number="3/1h"))
    for i in range(5000):
        c.add("caller", f"+9198{i:08d}", T0 + timedelta(seconds=i))
    # numbers whose hour passed are forgotten by the periodic sweep
    assert c.tracked_numbers() <= 3600 + 1024


def test_burst_raises_once_and_rearms() -> None:
    b = RefusalBurst(threshold=5, window=timedelta(minutes=1))
    fired = [b.note("country_not_allowed", T0 + timedelta(seconds=i)) for i in range(10)]
    assert [f is not None for f in fired] == [False] * 4 + [True] + [False] * 5
    assert b.note("opt_out", T0) is None
    assert b.refresh(T0 + timedelta(seconds=10))["country_not_allowed"] is True
    assert b.refresh(T0 + timedelta(minutes=5))["country_not_allowed"] is False
    assert b.note("country_not_allowed", T0 + timedelta(minutes=5)) is None


def test_a_number_texted_once_costs_a_few_hundred_bytes() -> None:
    """A busy agent keeps a window for every number texted within the per-number span (an
    hour of callers); a deque per number (~900 B each, seen growing a soak's RSS by 1.7 MB a
    minute at 40 texts/s) was most of the agent's growth."""
    import tracemalloc

    c = SendCounters(Limits.parse(per_number="3/1h"))
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(5000):
            c.add("caller", f"+9198{i:08d}", T0 + timedelta(milliseconds=i))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert c.tracked_numbers() == 5000
    assert grown / 5000 < 400, f"{grown / 5000:.0f} B per number"
    # the list-backed window still slides
    assert c.counts("caller", "+919800000000", T0 + timedelta(hours=1, seconds=1)).number == 0
    assert c.counts("caller", "+919800004999", T0 + timedelta(seconds=6)).number == 1
