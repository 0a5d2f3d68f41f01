"""Retention: the agent's periodic prune (rules.yaml ``retention:``), batch by batch.

What each horizon removes is the store's business (agent.store.sqlite.retention); this task only
decides when: every ``every``, batches of ``batch`` rows until nothing is left, with a pause
between batches so live writes (calls, messages, receipts) never queue behind a prune, then
free pages are handed back to the filesystem a slice at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

import structlog

from agent.errors import StoreError
from agent.rules.schema import Retention
from agent.store.sqlite.retention import PruneCounts

log = structlog.get_logger(__name__)

PAUSE = 0.05  # at least this long between batches: the writer serves everyone else meanwhile
SHARE = 0.1  # and long enough that pruning holds the writer at most this share of the time


@runtime_checkable
class RetentionStore(Protocol):
    async def prune_batch(self, *, details_before: datetime, rows_before: datetime | None,
                          batch: int = 500) -> PruneCounts: ...

    async def reclaim_space(self, max_pages: int = 2000) -> int: ...


async def prune(store: RetentionStore, *, details_before: datetime,
                rows_before: datetime | None, batch: int, pause: float = PAUSE,
                max_batches: int | None = None) -> PruneCounts:
    """Prune until nothing is left before the horizons (or ``max_batches``); returns the total."""
    total = PruneCounts()
    n = 0
    loop = asyncio.get_running_loop()
    while max_batches is None or n < max_batches:
        t0 = loop.time()
        done = await store.prune_batch(details_before=details_before, rows_before=rows_before,
                                       batch=batch)
        took = loop.time() - t0
        total += done
        n += 1
        if done.total == 0:
            break
        if pause:
            await asyncio.sleep(max(pause, took * (1 - SHARE) / SHARE))
    while await store.reclaim_space():
        await asyncio.sleep(pause)
    return total


START_DELAY = 60.0  # seconds: a starting agent recovers calls and resyncs first


async def run(store: RetentionStore, policy: Callable[[], Retention],
              clock: Callable[[], datetime], *, start_delay: float = START_DELAY) -> None:
    """The agent's task: prune a minute after the start, then every ``policy().every`` (a
    SIGHUP may change it)."""
    await asyncio.sleep(start_delay)
    while True:
        p = policy()
        now = clock()
        try:
            done = await prune(store, details_before=now - p.details,
                               rows_before=now - p.aggregates, batch=p.batch)
        except StoreError as exc:  # the disk's trouble is reported by the store's health
            log.warning("retention_failed", error=str(exc))
        else:
            if done.total:
                log.info("retention_pruned", details=done.details, messages=done.messages,
                         calls=done.calls, other=done.other)
        await asyncio.sleep(p.every.total_seconds())
