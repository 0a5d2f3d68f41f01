"""Event-loop lag probe: how late the loop that reads AMI wakes up, as a histogram and a verdict.

Asterisk drops a manager client that stops reading for its ``writetimeout`` (100 ms by default),
so a loop that stalls costs live events. The probe sleeps ``interval`` and records how much later
than asked it woke: anything CPU-heavy or blocking on the loop shows up here first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# DESIGN section 7: while reports and the dashboard read a year, p99 <= 20 ms and max <= 100 ms.
BUDGET_P99_S = 0.020
BUDGET_MAX_S = 0.100


@dataclass(frozen=True, slots=True)
class LagSummary:
    samples: int
    p50_s: float
    p99_s: float
    max_s: float

    @property
    def within_budget(self) -> bool:
        return self.p99_s <= BUDGET_P99_S and self.max_s <= BUDGET_MAX_S


def summarize(lags: list[float]) -> LagSummary:
    """Nearest-rank p50/p99 and the max of ``lags`` (seconds); zeros for no samples."""
    if not lags:
        return LagSummary(0, 0.0, 0.0, 0.0)
    s = sorted(lags)

    def rank(q: float) -> float:
        return s[min(len(s), max(1, -(-int(q * len(s)) // 100))) - 1]

    return LagSummary(len(s), rank(50), rank(99), s[-1])


class LagProbe:
    """Run ``await probe.run()`` as a task. ``observe`` (e.g. a Prometheus histogram's) gets
    every lag; ``recent()`` summarizes the last ``window`` seconds for /healthz."""

    def __init__(self, observe: Callable[[float], Any] | None = None, *, interval: float = 0.02,
                 window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.window = window
        self._observe = observe
        self._clock = clock
        self._recent: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        while True:
            asked = self._clock()
            await asyncio.sleep(self.interval)
            now = self._clock()
            self.record(max(0.0, now - asked - self.interval), now)

    def record(self, lag: float, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._recent.append((now, lag))
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()
        if self._observe is not None:
            self._observe(lag)

    def recent(self) -> LagSummary:
        return summarize([lag for _, lag in self._recent])

    def health(self) -> dict[str, Any]:
        """The /healthz entry: figures over the window, ``ok`` False when above the budget
        (``soft``: /healthz then says ``degraded``, still HTTP 200)."""
        s = self.recent()
        return {"ok": s.within_budget, "soft": True, "window_s": self.window, "samples": s.samples,
                "p50_ms": round(s.p50_s * 1000, 1), "p99_ms": round(s.p99_s * 1000, 1), "max_ms": round(s.max_s * 1000, 1),
                "budget_p99_ms": BUDGET_P99_S * 1000, "budget_max_ms": BUDGET_MAX_S * 1000}
