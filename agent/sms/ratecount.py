"""Rate-limit counters kept in memory (seeded from the store at start) and the refusal-burst alarm.

Counting a window by scanning the messages table costs a query per decision that grows with
the window (15.9 ms at 13k messages); these counters answer in O(1) amortised, in memory that
does not grow with traffic:

- an audience's global and daily windows keep at most their limit's send times (a text refused
  by a limit is never appended, and the newest ``limit`` times decide ``count >= limit``
  exactly); a limit above ``EXACT_UP_TO`` is counted in ``SLICES`` time slices of its window
  instead (``_Slices``: never under-counts; a send is counted at most one slice longer than
  its window);
- the per-number count is the store's (``PolicyFacts.sent_to_number``, one indexed read of
  that number's rows in the policy read it already makes) plus the texts counted here whose
  rows are not written yet. A window per number in memory was one per number texted within
  the span: an hour of callers, ~220 B each, growing with every new caller.

Pure: no asyncio, no store.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.models import RecipientKind
from agent.sms.policy import NO_COUNTS, AudienceLimits, Limits, RateLimit, SentCounts

# Limits up to this many texts per window are counted exactly (their send times, ~32 B each).
EXACT_UP_TO = 4096
# Larger ones in this many slices of their window (a day: slices of 169 s).
SLICES = 512


def audience_of(recipient: RecipientKind | str) -> str:
    return "agents" if recipient == RecipientKind.AGENT else "callers"


class _Window:
    """The newest send times inside the last ``span`` seconds, at most ``cap`` of them: enough
    to decide ``count >= cap`` exactly (when ``cap`` sends fall in the window, the newest
    ``cap`` are all among them). They sit in a ring of C doubles made at start: a send costs
    no Python object (a deque of floats kept each send's float alive for the whole window,
    up to a day, among the calls' short-lived garbage, pinning Python's object pools)."""

    __slots__ = ("_first", "_n", "_ring", "span")

    def __init__(self, span: float, cap: int) -> None:
        self.span = span
        self._ring = array("d", bytes(8 * max(0, cap)))
        self._first = 0  # the oldest time's place
        self._n = 0

    def _at(self, k: int) -> int:
        return (self._first + k) % len(self._ring)

    def count(self, now: float) -> int:
        cut = now - self.span
        ring = self._ring
        while self._n and ring[self._first] <= cut:
            self._first = self._at(1)
            self._n -= 1
        return self._n

    def add(self, at: float) -> None:
        if not self._ring:
            return
        if self._n == len(self._ring):  # full: the oldest goes
            self._first = self._at(1)
            self._n -= 1
        self._ring[self._at(self._n)] = at
        self._n += 1

    def discard(self, at: float) -> None:
        """Take back a send counted at ``at`` (the newest such; it is near the right end)."""
        ring = self._ring
        for k in range(self._n - 1, -1, -1):
            if ring[self._at(k)] == at:
                for j in range(k, self._n - 1):  # the newer ones move back a place
                    ring[self._at(j)] = ring[self._at(j + 1)]
                self._n -= 1
                return


class _Slices:
    """A window of a large limit as counts per slice of ``span / SLICES`` seconds: fixed
    memory whatever the traffic. The ring holds the slice ``now`` falls in and the ``SLICES``
    before it, so every send inside the window is counted; a send in the oldest slice stays
    counted until that slice leaves, up to ``span / SLICES`` after its window passed. A limit
    is thus never exceeded; a text may be refused that much early."""

    __slots__ = ("counts", "head", "span", "total", "width")

    def __init__(self, span: float) -> None:
        self.span = span
        self.width = span / SLICES
        self.counts = [0] * (SLICES + 1)
        self.head: int | None = None  # the newest slice seen (absolute number)
        self.total = 0

    def _advance(self, now: float) -> None:
        s = math.floor(now / self.width)
        head = self.head
        if head is None or s - head >= len(self.counts):
            self.counts = [0] * (SLICES + 1)
            self.total = 0
        elif s > head:
            counts, n = self.counts, len(self.counts)
            for i in range(head + 1, s + 1):
                self.total -= counts[i % n]
                counts[i % n] = 0
        else:
            return  # the clock did not move on (or went back): nothing left the window
        self.head = s

    def _slot(self, at: float) -> int | None:
        s = math.floor(at / self.width)
        head = self.head
        if head is None or not 0 <= head - s < len(self.counts):
            return None
        return s % len(self.counts)

    def count(self, now: float) -> int:
        self._advance(now)
        return self.total

    def add(self, at: float) -> None:
        self._advance(at)
        slot = self._slot(at)
        if slot is not None:
            self.counts[slot] += 1
            self.total += 1

    def discard(self, at: float) -> None:
        slot = self._slot(at)
        if slot is not None and self.counts[slot] > 0:
            self.counts[slot] -= 1
            self.total -= 1


def _window(limit: RateLimit | None) -> _Window | _Slices | None:
    if limit is None:
        return None
    span = limit.window.total_seconds()
    return _Window(span, limit.count) if limit.count <= EXACT_UP_TO else _Slices(span)


class _Audience:
    def __init__(self, limits: AudienceLimits) -> None:
        self.limits = limits
        self.global_ = _window(limits.global_)
        self.daily = _window(limits.daily)
        # number -> texts counted whose rows the store does not hold yet (in flight)
        self.unwritten: dict[str, int] = {}

    def counts(self, number: str, now: float, stored: int) -> SentCounts:
        return SentCounts(
            number=stored + self.unwritten.get(number, 0),
            global_=self.global_.count(now) if self.global_ is not None else 0,
            daily=self.daily.count(now) if self.daily is not None else 0,
        )

    def add(self, at: float) -> None:
        for w in (self.global_, self.daily):
            if w is not None:
                w.add(at)

    def discard(self, at: float) -> None:
        for w in (self.global_, self.daily):
            if w is not None:
                w.discard(at)


class SendCounters:
    """Texts sent (queued, deferred or further) per audience, in each limit's window."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._aud = {"callers": _Audience(limits.callers), "agents": _Audience(limits.agents)}

    def seed(self, sent: Iterable[tuple[str, str, datetime]]) -> None:
        """``(recipient_kind, number, sent_at)`` of the texts sent within the longest window,
        as the store has them at start (the per-number counts are the store's own)."""
        for kind, _number, at in sorted(sent, key=lambda s: s[2]):
            self._aud[audience_of(kind)].add(at.timestamp())

    def counts(self, recipient: RecipientKind | str, number: str | None, now: datetime,
               stored: int = 0) -> SentCounts:
        """``stored``: the texts to ``number`` in its per-number window that the store holds
        (``PolicyFacts.sent_to_number``)."""
        if number is None:
            return NO_COUNTS
        return self._aud[audience_of(recipient)].counts(number, now.timestamp(), stored)

    def add(self, recipient: RecipientKind | str, number: str | None, at: datetime) -> None:
        """Count a text at once (a concurrent decision sees it); ``settle`` it once its row
        is written or refused."""
        if number is None:
            return
        aud = self._aud[audience_of(recipient)]
        aud.add(at.timestamp())
        aud.unwritten[number] = aud.unwritten.get(number, 0) + 1

    def add_written(self, recipient: RecipientKind | str, at: datetime) -> None:
        """Count a text whose row is already written (another agent's): in the global and
        daily windows; the store counts it for its number."""
        self._aud[audience_of(recipient)].add(at.timestamp())

    def settle(self, recipient: RecipientKind | str, number: str | None, at: datetime, *,
               written: bool) -> None:
        """The row of a text ``add`` counted is in the store (``written``: from now on the
        store counts it for its number), or is not after all (a duplicate, a failed write:
        the add is undone)."""
        if number is None:
            return
        aud = self._aud[audience_of(recipient)]
        left = aud.unwritten.get(number, 0) - 1
        if left > 0:
            aud.unwritten[number] = left
        else:
            aud.unwritten.pop(number, None)
        if not written:
            aud.discard(at.timestamp())

    def tracked_numbers(self) -> int:
        """Numbers held in memory: only those with a text counted but not yet written."""
        return sum(len(a.unwritten) for a in self._aud.values())


@dataclass(frozen=True, slots=True)
class Burst:
    reason: str
    count: int
    window_seconds: float


class RefusalBurst:
    """Raises once when ``threshold`` refusals for one reason (rate_limited,
    country_not_allowed) fall within ``window``: the signature of SMS pumping or of a limit
    set too low, either of which an operator wants to hear about. It re-arms when the
    window holds fewer than half the threshold again."""

    WATCHED = frozenset({"rate_limited", "country_not_allowed"})

    def __init__(self, threshold: int = 20, window: timedelta = timedelta(minutes=1)) -> None:
        self.threshold = threshold
        self._span = window.total_seconds()
        self._windows: dict[str, _Window] = {}
        self.active: dict[str, bool] = {}

    def note(self, reason: str | None, now: datetime) -> Burst | None:
        """One refusal; returns the Burst when this one starts a burst."""
        if reason not in self.WATCHED:
            return None
        t = now.timestamp()
        # Only ``threshold`` times are needed to tell both edges (>= threshold, < half of it),
        # so a long pumping burst does not keep every refusal of its minute.
        w = self._windows.setdefault(reason, _Window(self._span, self.threshold))
        w.add(t)
        n = w.count(t)
        if n >= self.threshold and not self.active.get(reason):
            self.active[reason] = True
            return Burst(reason, n, self._span)
        return None

    def refresh(self, now: datetime) -> dict[str, bool]:
        """Which reasons are in a burst now (for the gauge), re-arming those that calmed."""
        t = now.timestamp()
        for reason, w in self._windows.items():
            if self.active.get(reason) and w.count(t) < max(1, self.threshold // 2):
                self.active[reason] = False
        return {r: self.active.get(r, False) for r in self.WATCHED}
