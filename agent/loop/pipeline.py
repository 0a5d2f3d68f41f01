"""The record pipeline: finished call records -> rules -> outbox rows; bounded, and never drops.

A record handed to ``put`` stays in memory until the store has taken it: while the store
refuses (disk full, database locked) it is retried with growing pauses, and the rules run
again each time, so ``max_age`` still holds. When the pipeline is full, ``put`` waits: the
tracker task stops taking AMI events, and the AMI client, seeing its queue fill, stops
reading the socket (back-pressure instead of loss; see agent.ami.client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from agent.backoff import backoff_delay
from agent.dispatch import Dispatcher
from agent.errors import StoreError
from agent.metrics import Metrics
from agent.models import CallRecord, Trigger
from agent.rules.engine import explain, rule_outcomes
from agent.rules.loader import RuleSet
from agent.sms.links import PendingLinks
from agent.store.base import Store

log = structlog.get_logger("aftercall.records")

#: Records waiting for the rules and the store before ``put`` waits for room.
DEFAULT_CAPACITY = 10_000


class RecordPipeline:
    """``put`` a finished call record; ``run`` is the worker; ``drain`` empties it at a stop."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        metrics: Metrics,
        *,
        rules: Callable[[], RuleSet],
        clock: Callable[[], datetime],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._rules = rules
        self._clock = clock
        self._queue: asyncio.Queue[int] = asyncio.Queue(capacity)
        # Every record not yet stored, oldest first (dicts keep insertion order): the queue
        # holds only their numbers, so the oldest and the call ids are known without a scan.
        self._pending: dict[int, tuple[float, CallRecord]] = {}
        self._seq = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.store_failing = False
        self.records = 0  # handed over since start
        self.decisions = 0

    # -- intake ---------------------------------------------------------------------------------

    async def put(self, record: CallRecord) -> None:
        """Hand over one record; waits while the pipeline is full."""
        self._seq += 1
        self._pending[self._seq] = (time.monotonic(), record)
        self._idle.clear()
        self.records += 1
        if self.store_failing:
            self._metrics.unrecorded(self.pending)
        await self._queue.put(self._seq)

    @property
    def pending(self) -> int:
        """Records handed over and not yet stored (queued, waiting for room, or being stored)."""
        return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds the oldest pending record has waited; 0 when none waits."""
        for t, _ in self._pending.values():
            return time.monotonic() - t
        return 0.0

    def pending_calls(self) -> set[str]:
        return {r.call_id for _, r in self._pending.values()}

    # -- the worker -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Oldest first, one at a time (a cooldown reads the store before it writes)."""
        failures = 0
        while True:
            seq = await self._queue.get()
            record = self._pending[seq][1]
            while True:
                try:
                    await self.apply(record)
                except StoreError as e:
                    failures += 1
                    self.store_failing = True
                    self._metrics.unrecorded(self.pending)
                    log.error("call_unrecorded", call_id=record.call_id, error=str(e),
                              pending=self.pending, failures=failures)
                    await asyncio.sleep(backoff_delay(failures - 1, 0.5, 10.0))
                    continue
                except Exception:  # one bad record must not stop the others
                    log.exception("call_record_failed", call_id=record.call_id)
                break
            del self._pending[seq]
            if failures:
                log.info("call_recorded_late", call_id=record.call_id, pending=self.pending)
                failures = 0
            if self.store_failing:
                self._metrics.unrecorded(self.pending)
                if not self._pending:
                    self.store_failing = False
                    self._metrics.store_health(True)
            if not self._pending:
                self._idle.set()

    async def apply(self, record: CallRecord) -> None:
        """Rules -> rows (with the call record and the links, one transaction) -> counted.
        Raises StoreError before anything is counted, so a retried record is counted once."""
        rules = self._rules()
        base = rules.defaults.public_base_url
        now = self._clock()
        traces = explain(rules, record, now=now, link=PendingLinks(base) if base else None)
        decisions = [d for t in traces for d in t.decisions]
        log.info(str(record.trigger), call_id=record.call_id, disposition=str(record.disposition),
                 queue=record.queue, caller=record.caller, decisions=len(decisions))
        completed = record.trigger is Trigger.CALL_COMPLETED
        rows = []
        if decisions or completed:  # a completed call is kept even when no rule matched
            rows = await self._dispatcher.handle(decisions, call=record)
        # After the rows: the outcomes' commit then runs beside the submit, not before it.
        await self._store.record_rule_outcomes(
            record.call_id, record.trigger, rule_outcomes(rules, record.trigger, traces), now=now)
        self.decisions += len(decisions)
        for d in decisions:
            self._metrics.rule_matched(d.rule)
        for row in rows:
            self._metrics.message_state(str(row.state), row.reason)
        if completed:
            self._metrics.call_completed(record)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every pending record to be stored; returns how
        many were not, and logs them (a CDR reconciliation at the next start recovers them)."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass
        left = self.pending
        if left:
            ids = sorted(self.pending_calls())
            log.error("records_unfinished", pending=left, call_ids=ids[:50],
                      more=max(0, len(ids) - 50))
        return left
