"""The Dispatcher: the outbox worker loop and receipts, composed with ``Intake`` (decisions ->
rows) and ``Sender`` (one row -> its gateway, as ``steps.next_step`` says)."""

from __future__ import annotations

import asyncio
import collections
import functools
import random
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from agent.backoff import backoff_delay
from agent.dispatch.intake import Intake
from agent.dispatch.retry import Clock, RetryPolicy, mask_number, utcnow
from agent.dispatch.sender import Sender, Wakeups
from agent.dispatch.steps import Policy
from agent.errors import ConfigError, StoreError
from agent.gateways.base import Gateway
from agent.metrics import Metrics
from agent.models import CallRecord, Decision, MessageState, Receipt, RuleOutcome
from agent.sms.policy import Limits
from agent.store.base import MessageRow, PeerSend, ReceiptOutcome
from agent.store.seams import DispatchStore

log = structlog.get_logger(__name__)


class Dispatcher:
    """Owns the outbox. ``await handle(...)`` records the decisions of a call (raising
    StoreError when it cannot); ``run()`` is the worker; ``stop()`` drains it within a bound."""

    def __init__(
        self,
        store: DispatchStore,
        gateways: Mapping[str, Gateway],
        *,
        backups: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        dry_run: bool = False,
        clock: Clock = utcnow,
        retry: RetryPolicy | None = None,
        expiry: timedelta = timedelta(hours=1),
        poll_interval: float = 1.0,
        ready_wait: float = 10.0,
        stale_submit: timedelta = timedelta(minutes=5),
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        backups = dict(backups or {})
        for primary, backup in backups.items():
            for name in (primary, backup):
                if name not in gateways:
                    raise ConfigError(
                        f"backup gateway mapping {primary} -> {backup}: no gateway named {name!r}"
                    )
        self._store = store
        self._clock = clock
        self._poll = poll_interval
        # A submit started this long ago and still unfinished will never finish: its agent
        # died (another agent on a shared database, or this one before a crash).
        self._stale_submit = stale_submit
        self._metrics = metrics  # states after intake, submit and hangup->submit times, receipts
        self._rand = (rng or random.Random()).random
        self._intake = Intake(store, limits=limits or Limits(), dry_run=dry_run, clock=clock,
                              expiry=expiry, metrics=metrics, outlet=self)
        policy = Policy(gateways=frozenset(gateways), backups=backups,
                        retry=retry or RetryPolicy(), expiry=expiry, rand=self._rand)
        self._sender = Sender(store, dict(gateways), policy, clock=clock, ready_wait=ready_wait,
                              rand=self._rand, metrics=metrics,
                              wakeups=Wakeups(self._retry_at, lambda: self._stopping))
        # Each gateway's window bounds our concurrency on it; the worker starts no more.
        self._max_in_flight = sum(gw.window for gw in gateways.values())
        # Who touches the shared state (all on one event loop, so ownership, not locks, keeps it
        # consistent):
        # - _in_flight: the worker (_start, _done, stop) and send_now; _capacity reads it.
        # - _ready: intake (through _queued) appends rows it just queued; the worker pops them
        #   (_done peeks).
        # - _wake: anyone sets it (intake, _retry_at, _done, wake, stop); only the loop clears it.
        # - _scan: set by wake(), _done and a timed-out wait; cleared only by the loop.
        # - _next_due: the loop's query result, moved earlier by _retry_at.
        # - _stopping: set by stop() alone; the loop and new sends stop.
        # - _reserved: window slots intake holds for rows it is writing (reserve/unreserve,
        #   queued); they count against capacity like sends in flight.
        # - resumed: set by run() once rows left mid-submit by an earlier run are judged;
        #   before that no row is claimed at intake (the resume would take it for one).
        self._ready: collections.deque[MessageRow] = collections.deque()
        self._reserved = 0
        self.resumed = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._scan = True  # look at the outbox table on the next loop turn (startup: resume)
        self._saturated = False  # due rows were left for lack of capacity
        self._next_due: datetime | None = None
        self._stopping = False
        self._running = False
        self._finished = asyncio.Event()

    # ---- intake ---------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._intake.limits

    def count_others(self, sends: Iterable[PeerSend]) -> None:
        """Texts other agents on the shared store sent (dispatch/peers.py): in our limits."""
        self._intake.count_others(sends)

    @limits.setter
    def limits(self, limits: Limits) -> None:
        """New limits (a rules reload): the counters start again from the store."""
        self._intake.limits = limits

    async def handle(
        self, decisions: list[Decision], call: CallRecord | None = None, *,
        confirms_opt_out: bool = False, outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[MessageRow]:
        """Record a call's decisions (``Intake.handle``); queued rows go straight to the worker."""
        return await self._intake.handle(decisions, call, confirms_opt_out=confirms_opt_out,
                                         outcomes=outcomes)

    async def cancel_scheduled(self, number: str, call_id: str, now: datetime, *,
                               pbx: str) -> list[str]:
        """A newer answered call from ``number`` (``Intake.cancel_scheduled``)."""
        return await self._intake.cancel_scheduled(number, call_id, now, pbx=pbx)

    async def reserve(self, gateway: str) -> str | None:
        """``Outlet.reserve``: a slot for a row that can be submitted as soon as it is written."""
        if not self.resumed.is_set() or self._stopping or self._capacity() <= 0:
            return None
        via = self._sender.ready_route(gateway)
        if via is None or not await self._sender.take_window(via):
            return None
        self._reserved += 1
        return via

    def unreserve(self, via: str) -> None:
        self._reserved -= 1
        self._sender.give_window(via)
        if self._ready or self._saturated:
            self._wake.set()

    def queued(self, row: MessageRow, via: str | None) -> None:
        """``Outlet.queued``: a row the store claimed with its queueing goes to its gateway now
        (no outbox loop turn, no claim commit); any other waits for the loop."""
        if via is not None:
            if row.submitting_since is not None and row.id not in self._in_flight:
                self._reserved -= 1
                self._track(row.id, self._sender.send_claimed(row, via))
                return
            self.unreserve(via)  # a store that does not claim at intake: the usual way
        self._ready.append(row)
        self._wake.set()

    # ---- receipts -------------------------------------------------------------------------

    async def on_receipt(self, receipt: Receipt) -> ReceiptOutcome:
        """Gateway receipt handler. Raises StoreError if it cannot be recorded, so the gateway
        can refuse the receipt and let the SMSC deliver it again."""
        outcome = await self._store.apply_receipt(receipt, now=self._clock())
        if self._metrics is not None and outcome.changed and outcome.message is not None:
            self._metrics.message_state(outcome.message.state, outcome.message.reason)
        msg = outcome.message
        log.info(
            "receipt_received",
            gateway=receipt.gateway,
            smsc_id=receipt.smsc_id,
            receipt_state=receipt.state.value,
            error_code=receipt.error_code,
            message_id=msg.id if msg else None,
            matched=msg is not None,
            duplicate=outcome.duplicate,
            changed=outcome.changed,
            state=msg.state.value if msg else None,
            to=mask_number(msg.number if msg else None),
        )
        return outcome

    # ---- the outbox worker ----------------------------------------------------------------

    async def run(self) -> None:
        """Resume the outbox (rows left mid-submit become ambiguous) and work until stop()."""
        self._running = True
        try:
            for row in await self._recover_in_flight():
                self._log_ambiguous(row)
            self.resumed.set()
            sweep = asyncio.create_task(self._sweep_stale(), name="outbox-stale-sweep")
            try:
                await self._outbox_loop()
            finally:
                sweep.cancel()
                await asyncio.gather(sweep, return_exceptions=True)
        finally:
            self._finished.set()

    @staticmethod
    def _log_ambiguous(row: MessageRow) -> None:
        log.warning("sms_ambiguous", message_id=row.id, rule=row.rule,
                    to=mask_number(row.number), reason=row.reason, detail=row.detail)

    async def _sweep_stale(self) -> None:
        """While running: submits started more than ``stale_submit`` ago and never finished
        become ambiguous. On a shared database that is how a dead peer's last submits get
        judged when it does not come back; never resent, like any ambiguous row."""
        every = max(self._stale_submit.total_seconds() / 5, 0.05)
        while True:
            await asyncio.sleep(every)
            now = self._clock()
            try:
                rows = await self._store.recover_in_flight(
                    now=now, started_before=now - self._stale_submit)
            except StoreError as exc:
                log.error("outbox_sweep_failed", error=str(exc))
                continue
            for row in rows:
                self._log_ambiguous(row)

    async def _recover_in_flight(self) -> list[MessageRow]:
        """Until the store answers (a locked or full disk at start must not stop the agent:
        nothing is claimed before this is done)."""
        failures = 0
        while True:
            try:
                return await self._store.recover_in_flight(now=self._clock())
            except StoreError as exc:
                if self._stopping:
                    return []
                log.error("outbox_resume_failed", error=str(exc), failures=failures + 1)
                await asyncio.sleep(backoff_delay(failures, 0.5, 10.0, rand=self._rand))
                failures += 1

    async def _outbox_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                while self._ready and self._capacity() > 0:
                    self._start(self._ready.popleft())
                # Rows handle() just queued are started above without a query; the outbox table
                # is scanned only when something else may have become due (timer, retry, wake).
                if self._scan and self._capacity() > 0:
                    self._scan = False
                    due = await self._store.due_messages(self._clock(), self._capacity() + 16)
                    started = sum(self._start(row) for row in due[: self._capacity()])
                    self._saturated = len(due) > started
                    if started:
                        self._scan = True  # there may be more; look again after yielding
                        await asyncio.sleep(0)
                        continue
                    nxt = await self._store.next_due_at()
                    self._next_due = nxt
                delay = self._poll
                if self._next_due is not None:
                    until = (self._next_due - self._clock()).total_seconds()
                    if until > 0:  # due-but-not-started rows are in flight; their end wakes us
                        delay = min(delay, until)
            except StoreError as exc:
                log.error("outbox_poll_failed", error=str(exc))
                delay = self._poll
                self._scan = True
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                self._scan = True

    def _capacity(self) -> int:
        return self._max_in_flight - len(self._in_flight) - self._reserved

    def _start(self, row: MessageRow) -> int:
        if row.id in self._in_flight:
            return 0
        self._track(row.id, self._sender.send(row))
        return 1

    def _track(self, message_id: str, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(send, name=f"sms-{message_id}")
        self._in_flight[message_id] = task
        task.add_done_callback(functools.partial(self._done, message_id))

    def _done(self, message_id: str, _task: asyncio.Task[None]) -> None:
        task = self._in_flight.pop(message_id, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("sms_send_crashed", message_id=message_id, error=repr(task.exception()))
        if self._saturated or self._ready:
            self._scan = self._scan or self._saturated
            self._wake.set()

    async def send_now(self, row: MessageRow) -> MessageRow | None:
        """Send one queued row at once, on the worker's own path (window, route, retry,
        failover), and return it as it then stands: for an acknowledgement that should not
        wait for the next outbox scan."""
        self._start(row)
        task = self._in_flight.get(row.id)
        if task is not None:
            await asyncio.shield(task)
        return await self._store.get_message(row.id)

    async def submit_now(self, d: Decision, *, confirms_opt_out: bool = False) -> MessageRow:
        """A text that comes from no call record (a keyword's acknowledgement): through the
        same policy as every other (number, country, opt-out, DND, limits), recorded, and
        when queued sent at once, since the sender is waiting for the answer.
        ``confirms_opt_out``: the STOP acknowledgement, the one text an opted-out number gets."""
        [row] = await self.handle([d], confirms_opt_out=confirms_opt_out)
        if row.state is MessageState.QUEUED:
            return await self.send_now(row) or row
        return row

    def _retry_at(self, at: datetime, immediately: bool) -> None:
        """The sender scheduled a retry: the loop re-times its wait (or looks now)."""
        if self._next_due is None or at < self._next_due:
            self._next_due = at
        if immediately:
            self.wake()
        else:
            self._wake.set()

    def wake(self) -> None:
        """Look at the outbox now (e.g. after the clock moved, or the operator edited a row)."""
        self._scan = True
        self._wake.set()

    async def settle(self, timeout: float) -> int:
        """At a stop, before ``stop``: let the rows due now reach their gateway, for up to
        ``timeout`` seconds. Returns how many due rows are left (logged); they stay queued in
        the outbox and the next start sends them."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            if not self._ready and not self._in_flight:
                try:
                    if not await self._store.due_messages(self._clock(), 1):
                        return 0
                except StoreError:
                    pass
            if loop.time() >= end:
                break
            await asyncio.sleep(0.02)  # bounded: a stop waits for sends, not for an event
        try:
            left = len(await self._store.due_messages(self._clock(), 1_000_000))
        except StoreError:
            left = -1
        log.error("outbox_unfinished", due=left, in_flight=len(self._in_flight),
                  detail="left queued in the outbox: the next start sends them")
        return left

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work; let in-flight submits finish for up to ``timeout`` seconds. A submit
        still running then is cancelled and its row becomes ambiguous at the next start."""
        self._stopping = True
        self._wake.set()
        pending = list(self._in_flight.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                log.warning("dispatcher_stop_cancelled", in_flight=len(late))
        if self._running:
            await self._finished.wait()

