"""Send pacing shared by the SMPP and HTTP drivers: a GCRA limiter at a configured rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Paces sends at ``rate`` per second (GCRA). The small tolerance lets a late timer catch
    up, so the long-run rate is the configured one rather than rate minus timer overshoot."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep, tolerance: float = 0.05) -> None:
        if rate <= 0:
            raise ValueError("tps: must be > 0")
        self._interval = 1.0 / rate
        self._tolerance = max(tolerance, self._interval)
        self._clock, self._sleep = clock, sleep
        self._tat = 0.0

    async def acquire(self) -> None:
        now = self._clock()
        start = max(self._tat, now - self._tolerance)
        self._tat = start + self._interval
        delay = start - now
        if delay > 0:
            await self._sleep(delay)
