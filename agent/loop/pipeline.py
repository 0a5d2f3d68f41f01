"""The record pipeline: finished call records -> rules -> outbox rows; bounded, and never drops.

A record handed to ``put`` stays in memory until the store has taken it: while the store
refuses (disk full, database locked) it is retried with growing pauses, and the rules run
again each time, so ``max_age`` still holds. When the pipeline is full, ``put`` waits: the
tracker task stops taking AMI events, and the AMI client, seeing its queue fill, stops
reading the socket (back-pressure instead of loss; see agent.ami.client).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import structlog

from agent.backoff import backoff_delay
from agent.dispatch import Dispatcher
from agent.errors import StoreError
from agent.loop.wrapups import WrapupWaits
from agent.metrics import Metrics
from agent.models import CallRecord, Decision, Disposition, Trigger
from agent.rules.engine import RuleTrace, explain, rule_outcomes
from agent.rules.loader import RuleSet
from agent.rules.wrapup import waiting_outcomes, wrapup_due
from agent.sms.links import PendingLinks
from agent.sms.numbers import classify
from agent.sms.policy import Limits
from agent.store.seams import CallLog

log = structlog.get_logger("aftercall.records")

class _Judged(NamedTuple):
    """What the rules said about one record, and under which rules and time."""

    rules: RuleSet
    now: datetime
    traces: list[RuleTrace]
    decisions: list[Decision]
    wait_until: datetime | None = None  # held for the agent's wrap-up code until then


#: Records waiting for the rules and the store before ``put`` waits for room.
DEFAULT_CAPACITY = 10_000
#: Records in flight at once (each waits for a policy read and its share of a group commit).
DEFAULT_WORKERS = 32


class RecordPipeline:
    """``put`` a finished call record; ``run`` is the worker; ``drain`` empties it at a stop."""

    def __init__(
        self,
        store: CallLog,
        dispatcher: Dispatcher,
        metrics: Metrics,
        *,
        rules: Callable[[], RuleSet],
        clock: Callable[[], datetime],
        capacity: int = DEFAULT_CAPACITY,
        workers: int = DEFAULT_WORKERS,
        languages: Mapping[str, str] | None = None,
    ) -> None:
        """``languages``: number -> the language it asked for, kept in memory (by the reply
        handler) so that deciding a record never waits for the store."""
        self._languages = languages if languages is not None else {}
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
        self._workers = workers
        # key (a number, or a call as (PBX, call id)) -> done-future of the last record holding it
        self._tails: dict[str | tuple[str, str], asyncio.Future[None]] = {}
        self._progress = asyncio.Condition()  # notified as records are stored
        self._idle = asyncio.Event()
        self._idle.set()
        self.store_failing = False
        self.records = 0  # handed over since start
        self.decisions = 0
        #: Calls held for their agent's wrap-up code (agent.loop.wrapups).
        self.wrapups = WrapupWaits(store, rules=rules, clock=clock, put=self.put)
        self._requeued: set[asyncio.Task[int]] = set()

    # -- intake ---------------------------------------------------------------------------------

    async def put(self, record: CallRecord) -> int:
        """Hand over one record; waits while the pipeline is full. Returns its number."""
        self._seq += 1
        seq = self._seq
        self._pending[seq] = (time.monotonic(), record)
        self._idle.clear()
        self.records += 1
        if self.store_failing:
            self._metrics.unrecorded(self.pending)
        await self._queue.put(seq)
        return seq

    async def stored(self, seqs: list[int]) -> None:
        """Wait until the records numbered ``seqs`` (from ``put``) have been stored."""
        async with self._progress:
            await self._progress.wait_for(lambda: not any(s in self._pending for s in seqs))

    def oldest_pending_end(self) -> datetime | None:
        """When the oldest pending record's call ended (None: none pending, or not ended)."""
        ends = [r.ended_at for _, r in self._pending.values() if r.ended_at is not None]
        return min(ends) if ends else None

    @property
    def pending(self) -> int:
        """Records handed over and not yet stored (queued, waiting for room, or being stored)."""
        return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds the oldest pending record has waited; 0 when none waits."""
        for t, _ in self._pending.values():
            return time.monotonic() - t
        return 0.0

    def pending_calls(self, pbx: str) -> set[str]:
        """The ids of ``pbx``'s calls not yet stored (one pipeline serves every PBX watched)."""
        return {r.call_id for _, r in self._pending.values() if r.pbx == pbx}

    # -- the workers ----------------------------------------------------------------------------

    async def run(self) -> None:
        """``workers`` records in flight at once: the store commits theirs together. Records
        of one call, and records texting one number under a cooldown or a per-number limit,
        are applied in the order they came (both read what the record before wrote). The
        global and daily limits need no order: their counters are in memory and counted as
        each decision is judged."""
        async with asyncio.TaskGroup() as tg:
            for i in range(self._workers):
                tg.create_task(self._worker(), name=f"records-{i}")
            tg.create_task(self.wrapups.run(), name="records-wrapups")

    async def _worker(self) -> None:
        while True:
            seq = await self._queue.get()
            record = self.wrapups.with_early_code(self._pending[seq][1])
            # No await between taking the record and taking its place in line: the order of
            # the queue is the order per key.
            try:
                judged: _Judged | None = self._decide(record)
            except Exception:  # one bad record must not stop the others
                log.exception("call_record_failed", call_id=record.call_id)
                judged = None
            mine = asyncio.get_running_loop().create_future()
            keys: set[str | tuple[str, str]] = {
                (record.pbx, record.call_id),
                *_ordered_numbers(judged.decisions if judged else (), self._dispatcher.limits)}
            before = [self._tails[k] for k in keys if k in self._tails]
            for k in keys:
                self._tails[k] = mine
            try:
                for prev in before:
                    await asyncio.shield(prev)
                if judged is not None:
                    await self._store_record(record, judged)
            finally:
                mine.set_result(None)
                for k in keys:
                    if self._tails.get(k) is mine:
                        del self._tails[k]
                del self._pending[seq]
                self._settled()
                async with self._progress:
                    self._progress.notify_all()

    def _decide(self, record: CallRecord) -> _Judged:
        rules = self._rules()
        base = rules.defaults.public_base_url
        now = self._clock()
        due = wrapup_due(rules, record, now)
        if due is not None:
            return _Judged(rules, now, [], [], due)
        traces = explain(rules, record, now=now, link=PendingLinks(base) if base else None,
                         preferences=self._languages)
        return _Judged(rules, now, traces, [d for t in traces for d in t.decisions])

    async def _store_record(self, record: CallRecord, judged: _Judged) -> None:
        """Until the store takes it: while it refuses, wait longer between tries (agent.backoff)
        and keep the alarm up; each retry decides again, so max_age still holds."""
        failures = 0
        while True:
            try:
                await self._apply(record, judged)
            except StoreError as e:
                failures += 1
                self.store_failing = True
                self._metrics.unrecorded(self.pending)
                log.error("call_unrecorded", call_id=record.call_id, error=str(e),
                          pending=self.pending, failures=failures)
                await asyncio.sleep(backoff_delay(failures - 1, 0.5, 10.0))
                judged = self._decide(record)
                continue
            except Exception:  # one bad record must not stop the others
                log.exception("call_record_failed", call_id=record.call_id)
            break
        if failures:
            log.info("call_recorded_late", call_id=record.call_id, pending=self.pending - 1)

    def _settled(self) -> None:
        if self.store_failing:
            self._metrics.unrecorded(self.pending)
            if not self._pending:
                self.store_failing = False
                self._metrics.store_health(True)
        if not self._pending:
            self._idle.set()

    async def apply(self, record: CallRecord) -> None:
        """Apply the rules to one record and store the outcome now (the queue and its order
        bypassed: for tests and tools)."""
        await self._apply(record, self._decide(record))

    async def _apply(self, record: CallRecord, judged: _Judged) -> None:
        """Rows (with the call record and the links, one transaction) -> counted. Raises
        StoreError before anything is counted, so a retried record is counted once."""
        rules, now, traces, decisions, wait_until = judged
        if wait_until is not None:
            await self._hold(record, rules, now, wait_until)
            return
        completed = record.trigger is Trigger.CALL_COMPLETED
        outcomes = rule_outcomes(rules, record.trigger, traces)
        rows = []
        if decisions or completed:  # a completed call is kept even when no rule matched
            # The call, its rows, links and what each rule said: one op, so one commit (and
            # no second commit for the claim of its first submit to queue behind).
            rows = await self._dispatcher.handle(decisions, call=record, outcomes=outcomes)
        else:
            await self._store.record_rule_outcomes(record.call_id, record.trigger, outcomes,
                                                   now=now, pbx=record.pbx)
        # Logged once stored, its texts on their way: at INFO a line is ~0.1 ms of the loop's,
        # not to be spent between the hangup and the submit_sm.
        log.info(str(record.trigger), call_id=record.call_id, disposition=str(record.disposition),
                 queue=record.queue, caller=record.caller, decisions=len(decisions))
        if (completed and record.disposition is Disposition.ANSWERED and record.caller
                and any(r.unless and r.unless.called_again for r in rules.rules)):
            # texts scheduled "unless called again" by this number's earlier calls
            caller = classify(record.caller, rules.defaults.region).e164
            if caller is not None:
                await self._dispatcher.cancel_scheduled(caller, record.call_id, now,
                                                        pbx=record.pbx)
        self.decisions += len(decisions)
        for d in decisions:
            self._metrics.rule_matched(d.rule)
        for row in rows:
            self._metrics.message_state(str(row.state), row.reason)
        if completed:
            self._metrics.call_completed(record)

    async def _hold(self, record: CallRecord, rules: RuleSet, now: datetime,
                    due: datetime) -> None:
        """Keep the call (stored, marked waiting: a restart finds it) and hold it for its
        wrap-up code; decided when the code or ``due`` comes."""
        await self._dispatcher.handle([], call=record, outcomes=waiting_outcomes(rules, due))
        early = self.wrapups.hold(record, due)
        if early is not None:  # its code came while it was being stored: decided anew, by a
            # task of its own (a worker waiting for room in its own queue could wait forever)
            task = asyncio.get_running_loop().create_task(self.put(early))
            self._requeued.add(task)
            task.add_done_callback(self._requeued.discard)

    async def drain(self, timeout: float) -> list[CallRecord]:
        """Wait up to ``timeout`` seconds for every pending record to be stored; returns (and
        logs) those that were not, oldest first, for the caller to keep for the next start."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass
        left = [r for _, r in self._pending.values()]
        if left:
            ids = [r.call_id for r in left]
            log.error("records_unfinished", pending=len(left), call_ids=ids[:50],
                      more=max(0, len(ids) - 50))
        return left


def _ordered_numbers(decisions: list[Decision] | tuple[()], limits: Limits) -> set[str]:
    """The numbers whose records must not overtake each other: those a cooldown or a
    per-number limit guards (both read what the record before wrote to the store)."""
    return {d.number for d in decisions if d.number and (
        d.cooldown_seconds or limits.audience(d.recipient).per_number is not None)}


def spill(path: Path, records: list[CallRecord]) -> None:
    """Keep records a stop could not store, for the next start (``unspill``). Blocking."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def unspill(path: Path) -> list[CallRecord]:
    """The records a previous stop kept (none when there is no file). Blocking."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [CallRecord.from_dict(json.loads(line)) for line in lines if line.strip()]
