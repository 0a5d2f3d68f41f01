"""Texts other agents sharing the database sent, read every second into this agent's limits.

Each agent counts the global and daily rate limits and the spend caps in memory
(sms/ratecount.py, sms/spend.py). Agents on one PostgreSQL database each send part of the
traffic, so each also counts the others' texts: every ``INTERVAL`` it reads the rows other
agents wrote (``messages.written_by``) within the last ``MARGIN`` and counts those it has not
seen. Together the agents thus stay within a limit up to what the others sent in the last
interval (and a row committed later than ``MARGIN`` after its time, which is not seen at all).
The per-number limit needs none of this: it is read from the rows themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

import structlog

from agent.errors import StoreError
from agent.store.base import PeerSend

log = structlog.get_logger(__name__)

INTERVAL = 1.0  # seconds between reads
# How far back each read looks: a row is seen if it commits within this of its time (its
# agent's clock; the agents' clocks are assumed NTP-close, as cooldowns already assume).
MARGIN = timedelta(seconds=10)


#: The store's read of the other agents' texts since a time (``sends_by_others``).
ReadOthers = Callable[[datetime], Awaitable[list[PeerSend]]]


class PeerSends:
    """Reads the other agents' new texts and hands each to ``count`` once."""

    def __init__(self, read: ReadOthers, count: Callable[[Iterable[PeerSend]], None],
                 clock: Callable[[], datetime], *, interval: float = INTERVAL,
                 margin: timedelta = MARGIN) -> None:
        self._read = read
        self._count = count
        self._clock = clock
        self._interval = interval
        self._margin = margin
        self._seen: dict[str, datetime] = {}  # id -> time, of rows still inside the margin
        # time.monotonic() when the last read that succeeded began: every row committed
        # before it has been counted
        self.read_from = float("-inf")

    async def catch_up(self) -> int:
        """One read: counts the texts not seen before; how many they were."""
        began = time.monotonic()
        since = self._clock() - self._margin
        sends = await self._read(since)
        fresh = [s for s in sends if s.id not in self._seen]
        self._seen = {i: at for i, at in self._seen.items() if at >= since}
        self._seen.update((s.id, s.at) for s in fresh)
        if fresh:
            self._count(fresh)
        self.read_from = began
        return len(fresh)

    async def run(self) -> None:
        while True:
            try:
                await self.catch_up()
            except StoreError as exc:  # the store says when it is down; the next read retries
                log.warning("peer_sends_unread", error=str(exc))
            await asyncio.sleep(self._interval)
