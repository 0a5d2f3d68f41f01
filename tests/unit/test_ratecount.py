"""In-memory rate-limit counters and the refusal-burst alarm (pure, fed with timestamps)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from agent.models import RecipientKind
from agent.sms.policy import AudienceLimits, Limits, SentCounts, parse_rate
from agent.sms.ratecount import EXACT_UP_TO, SLICES, RefusalBurst, SendCounters

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
    # not written yet: counted for the number from memory
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=3)) == SentCounts(3, 4, 4)
    for i in range(3):
        c.settle(RecipientKind.CALLER, "+919812345678", T0 + timedelta(seconds=i), written=True)
    # written: the store's count (here 3) is the number's, nothing of it stays in memory
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=3)) == SentCounts(0, 4, 4)
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=3), 3) == SentCounts(3, 4, 4)
    # one minute on: the global window emptied, the day did not
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=62)) == SentCounts(0, 0, 4)
    assert c.counts("agent", "+919876543210", T0) == SentCounts(1, 1, 0)


def test_seed_then_undo_a_duplicate() -> None:
    c = SendCounters(LIMITS)
    c.seed([("caller", "+919812345678", T0 + timedelta(seconds=s)) for s in (30, 10, 20)])
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=31)) == SentCounts(0, 3, 3)
    c.add("caller", "+919812345678", T0 + timedelta(seconds=40))
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=41)) == SentCounts(1, 4, 4)
    c.settle("caller", "+919812345678", T0 + timedelta(seconds=40), written=False)
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=41)) == SentCounts(0, 3, 3)
    assert c.tracked_numbers() == 0


def test_no_number_stays_in_memory_once_written() -> None:
    """A window per number texted within the per-number span (an hour of callers, ~220 B
    each) grew a soak's RSS with every new caller; the store counts a number's texts now."""
    c = SendCounters(Limits.parse(per_number="3/1h"))
    for i in range(5000):
        at = T0 + timedelta(seconds=i)
        c.add("caller", f"+9198{i:08d}", at)
        c.settle("caller", f"+9198{i:08d}", at, written=True)
    assert c.tracked_numbers() == 0


def _grown(fn: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        fn()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def test_memory_does_not_grow_with_texts_under_large_limits() -> None:
    """Limits lifted far above the traffic (a day's window of 10^9): the send times of a day
    were kept (~32 B a text, and one window per number); slices keep memory flat."""
    c = SendCounters(Limits.parse(per_number="1000/1h", global_="100000000/1m",
                                  daily="1000000000/1d"))
    n = 0

    def texts(count: int) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            at = T0 + timedelta(milliseconds=25 * n)  # 40 texts/s
            c.add("caller", f"+9197{n:08d}", at)
            c.settle("caller", f"+9197{n:08d}", at, written=True)

    texts(2000)  # the slices exist
    grown = _grown(lambda: texts(40_000))
    assert grown < 16_000, f"{grown} B for 40,000 texts"
    assert c.counts("caller", "+919700000001", T0 + timedelta(seconds=1001)).daily == 42_000


def test_exact_window_keeps_at_most_its_limit() -> None:
    """The newest ``limit`` send times decide ``count >= limit`` exactly, whatever the store
    seeded (a lowered limit after a busy day)."""
    c = SendCounters(Limits.parse(global_="100/1m", daily="500/1d"))
    c.seed([("caller", "+919812345678", T0 + timedelta(milliseconds=s)) for s in range(5000)])
    assert c.counts("caller", None, T0) == SentCounts()
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=6)) == SentCounts(0, 100, 500)
    # the minute after the last: the day still full, the minute empty
    assert c.counts("caller", "+919812345678", T0 + timedelta(seconds=66)) == SentCounts(0, 0, 500)


def test_slices_never_undercount_and_free_one_slice_late() -> None:
    day = 86_400.0
    width = day / SLICES
    c = SendCounters(Limits.parse(daily=f"{EXACT_UP_TO + 1}/1d"))
    start = T0 + timedelta(seconds=width * 10)  # the start of a slice
    for i in range(100):
        c.add("caller", "+919812345678", start + timedelta(seconds=i))
    at = start + timedelta(seconds=day)
    # inside the window (exactly, by the send times): all counted
    assert c.counts("caller", "+919812345678", start + timedelta(seconds=day - 1)).daily == 100
    # past the window: still counted while their slice is in the ring (conservative) ...
    assert c.counts("caller", "+919812345678", at + timedelta(seconds=width - 1)).daily == 100
    # ... and gone one slice later
    assert c.counts("caller", "+919812345678", at + timedelta(seconds=width)).daily == 0
    # a clock that steps back does not forget what was counted
    c.add("caller", "+919812345678", at + timedelta(seconds=width))
    assert c.counts("caller", "+919812345678", at).daily == 1


def test_burst_raises_once_and_rearms() -> None:
    b = RefusalBurst(threshold=5, window=timedelta(minutes=1))
    fired = [b.note("country_not_allowed", T0 + timedelta(seconds=i)) for i in range(10)]
    assert [f is not None for f in fired] == [False] * 4 + [True] + [False] * 5
    assert b.note("opt_out", T0) is None
    assert b.refresh(T0 + timedelta(seconds=10))["country_not_allowed"] is True
    assert b.refresh(T0 + timedelta(minutes=5))["country_not_allowed"] is False
    assert b.note("country_not_allowed", T0 + timedelta(minutes=5)) is None


def test_a_refusal_burst_keeps_at_most_its_threshold() -> None:
    b = RefusalBurst(threshold=20, window=timedelta(minutes=1))
    b.note("rate_limited", T0)
    grown = _grown(lambda: [b.note("rate_limited", T0 + timedelta(milliseconds=i))
                            for i in range(20_000)])
    assert grown < 8_000, f"{grown} B for 20,000 refusals in a minute"
    assert b.refresh(T0 + timedelta(seconds=30))["rate_limited"] is True
    assert b.refresh(T0 + timedelta(seconds=81))["rate_limited"] is False


def test_an_exact_window_answers_as_the_deque_of_the_newest_times() -> None:
    """The ring of doubles against the deque(maxlen=cap) it replaced: random sends (some at
    the same instant), counts as time goes on, and sends taken back."""
    import random
    from collections import deque

    from agent.sms.ratecount import _Window

    for cap in (0, 1, 3, 50):
        rnd = random.Random(cap)
        w, model = _Window(10.0, cap), deque[float](maxlen=cap)
        now = 0.0
        for _ in range(5_000):
            now += rnd.choice((0.0, 0.1, 0.5, 2.0))
            op = rnd.random()
            if op < 0.5:
                w.add(now)
                model.append(now)
            elif op < 0.6 and model:
                at = rnd.choice(list(model))
                w.discard(at)
                for i in range(len(model) - 1, -1, -1):
                    if model[i] == at:
                        del model[i]
                        break
            while model and model[0] <= now - 10.0:
                model.popleft()
            assert w.count(now) == len(model)


def test_counting_sends_keeps_no_object_per_send() -> None:
    """A daily limit counted exactly keeps up to its limit's send times for a day: as C
    doubles in a ring made at start, not a float object per text alive all day among the
    calls' short-lived garbage."""
    import gc
    import sys

    c = SendCounters(Limits.parse(per_number="1000/1h", global_="4000/1m", daily="4000/1d"))

    def sends(first: int, last: int) -> None:
        for i in range(first, last):
            at = T0 + timedelta(seconds=i / 10)
            c.add(RecipientKind.CALLER, f"+9197{i:08d}", at)
            c.settle(RecipientKind.CALLER, f"+9197{i:08d}", at, written=True)

    sends(0, 100)
    gc.collect()
    before = sys.getallocatedblocks()
    sends(100, 4_000)
    gc.collect()
    assert c.counts("caller", "+919700000000", T0 + timedelta(seconds=400)).daily == 4_000
    assert sys.getallocatedblocks() - before < 300
