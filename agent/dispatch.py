"""The dispatcher: decisions -> policy -> durable outbox -> gateway submit, retries, receipts."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from agent.backoff import backoff_delay
from agent.errors import (
    ConfigError,
    GatewayAmbiguousError,
    GatewayError,
    GatewayPermanentError,
    GatewayTemporaryError,
    StoreError,
)
from agent.gateways.base import Gateway
from agent.models import CallRecord, Decision, MessageState, OutboundSms, Receipt
from agent.sms.numbers import mask
from agent.sms.policy import Limits, evaluate
from agent.store.base import MessageRow, ReceiptOutcome, Store

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def mask_number(number: str | None) -> str:
    """``+919812345678`` -> ``+91******5678`` (the one masking rule: agent.sms.numbers.mask)."""
    return mask(number) if number else "-"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a message is retried after a GatewayTemporaryError (the delays
    follow ``agent.backoff``)."""

    initial: float = 1.0  # seconds before the 2nd attempt
    max_backoff: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2  # up to this fraction off each delay: a burst does not retry in lockstep
    max_attempts: int | None = 10
    #: While the gateway itself is unreachable (not bound, connection refused or lost before
    #: the submit went out) the message never reached an SMSC: such attempts do not count
    #: towards ``max_attempts`` (expiry bounds them) and wait at most this long, so a backlog
    #: starts draining within seconds of the gateway's return however long it was down.
    unavailable_max_backoff: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return backoff_delay(max(0, attempt - 1), self.initial, self.max_backoff,
                             factor=self.multiplier, jitter=self.jitter, rand=rand)


_Intake = tuple[list[Decision], CallRecord | None]

#: GatewayTemporaryError reasons that mean the submit never left this host.
GATEWAY_UNAVAILABLE = frozenset({"not_bound", "connect_failed", "connection_lost",
                                 "connection_failed"})


class Dispatcher:
    """Owns the outbox. Feed it with ``submit_nowait`` (never blocks: the AMI path calls it) or
    ``await handle(...)``; ``run()`` is the worker; ``stop()`` drains it within a bound."""

    def __init__(
        self,
        store: Store,
        gateways: Mapping[str, Gateway],
        *,
        backups: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        dry_run: bool = False,
        clock: Clock = utcnow,
        retry: RetryPolicy | None = None,
        expiry: timedelta = timedelta(hours=1),
        windows: Mapping[str, int] | None = None,
        default_window: int = 10,
        queue_size: int = 1000,
        poll_interval: float = 1.0,
        ready_wait: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        backups = dict(backups or {})
        for primary, backup in backups.items():
            for name in (primary, backup):
                if name not in gateways:
                    raise ConfigError(
                        f"backup gateway mapping {primary} -> {backup}: no gateway named {name!r}"
                    )
        self._store = store
        self._gateways = dict(gateways)
        self._backups = backups
        self._limits = limits or Limits()
        self._dry_run = dry_run
        self._clock = clock
        self._retry_policy = retry or RetryPolicy()
        self._expiry = expiry
        self._poll = poll_interval
        self._ready_wait = ready_wait
        self._rand = (rng or random.Random()).random
        # A gateway's own window (SMPP: unacknowledged submits) bounds our concurrency on it.
        sizes = {
            name: (windows or {}).get(name) or int(getattr(gw, "window", 0) or default_window)
            for name, gw in self._gateways.items()
        }
        self._windows = {name: asyncio.Semaphore(n) for name, n in sizes.items()}
        self._max_in_flight = sum(sizes.values())
        self._intake: asyncio.Queue[_Intake | None] = asyncio.Queue(maxsize=queue_size)
        self._ready: collections.deque[MessageRow] = collections.deque()
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._failed_over: set[str] = set()
        self._scan = True  # look at the outbox table on the next loop turn (startup: resume)
        self._saturated = False  # due rows were left for lack of capacity
        self._next_due: datetime | None = None
        self._stopping = False
        self._running = False
        self._finished = asyncio.Event()

    # ---- intake ---------------------------------------------------------------------------

    def submit_nowait(self, decisions: list[Decision], call: CallRecord | None = None) -> bool:
        """Hand decisions over without waiting. False (and an error log) when the dispatcher is
        stopping or its queue is full: back-pressure is visible, never a stalled AMI reader."""
        if self._stopping:
            log.error(
                "decisions_refused",
                call_id=call.call_id if call else None,
                count=len(decisions),
                why="dispatcher stopping",
            )
            return False
        try:
            self._intake.put_nowait((decisions, call))
        except asyncio.QueueFull:
            log.error(
                "decisions_dropped",
                call_id=call.call_id if call else None,
                count=len(decisions),
                queue_size=self._intake.maxsize,
            )
            return False
        return True

    async def handle(
        self, decisions: list[Decision], call: CallRecord | None = None
    ) -> list[MessageRow]:
        """Apply policies and record one row per decision (suppressed ones too). Raises
        StoreError if the store cannot record; repeating the call is safe (idempotency keys)."""
        rows = []
        for d in decisions:
            rows.append(await self._handle_one(d, call=call))
            call = None  # saved with the first row
        if call is not None:
            await self._store.save_call(call, now=self._clock())
        return rows

    async def _handle_one(self, d: Decision, call: CallRecord | None = None) -> MessageRow:
        now = self._clock()
        facts = None
        if d.number is not None and d.suppress is None:
            per, glob = self._limits.per_number, self._limits.global_
            facts = await self._store.policy_facts(
                d.number,
                d.rule,
                number_since=now - per.window if per else now,
                global_since=now - glob.window if glob else now,
            )
        try:
            outcome = evaluate(
                d,
                now=now,
                opted_out=facts.opted_out if facts else False,
                dnd=facts.dnd if facts else False,
                last_sent_at=facts.last_sent_at if facts else None,
                sent_last_window_number=facts.sent_window_number if facts else 0,
                sent_last_window_global=facts.sent_window_global if facts else 0,
                limits=self._limits,
                dry_run=self._dry_run,
            )
        except ValueError as exc:  # a decision the schema should have refused: log it, send none
            row, _ = await self._insert(
                call, now, d, state=MessageState.FAILED, now=now, reason="policy_error",
                detail=str(exc))
            log.error(
                "sms_failed", message_id=row.id, rule=d.rule, reason="policy_error", detail=str(exc)
            )
            return row
        next_at: datetime | None
        expires: datetime | None
        if outcome.action == "send":
            state, next_at, expires = MessageState.QUEUED, now, self._expires(d, now)
        elif outcome.action == "defer":
            state, next_at, expires = MessageState.DEFERRED, outcome.not_before, None
        else:
            state, next_at, expires = MessageState.SUPPRESSED, None, None
        row, created = await self._insert(
            call,
            now,
            d,
            state=state,
            now=now,
            reason=outcome.reason.value if outcome.reason else None,
            detail=outcome.detail,
            next_attempt_at=next_at,
            expires_at=expires,
        )
        fields = {
            "message_id": row.id,
            "call_id": d.call_id,
            "rule": d.rule,
            "to": mask_number(d.number),
        }
        if not created:
            log.info("sms_duplicate_ignored", state=row.state.value, **fields)
        elif state is MessageState.QUEUED:
            log.info("sms_queued", gateway=d.gateway, segments=d.segments, **fields)
            self._ready.append(row)
            self._wake.set()
        elif state is MessageState.DEFERRED:
            log.info(
                "sms_deferred",
                not_before=next_at.isoformat() if next_at else None,
                reason=row.reason,
                **fields,
            )
        else:
            # detail stays in the row: an engine's detail may quote the raw number.
            log.info("sms_suppressed", reason=row.reason, **fields)
        return row

    async def _insert(self, call: CallRecord | None, at: datetime, d: Decision,
                      **fields: Any) -> tuple[MessageRow, bool]:
        """The row, and the call record with it when given: queued together they share one
        commit (one fsync on the path from hangup to submit)."""
        insert = self._store.insert_message(d, **fields)
        if call is None:
            return await insert
        _, out = await asyncio.gather(self._store.save_call(call, now=at), insert)
        return out

    def _expires(self, d: Decision, now: datetime) -> datetime:
        """An after-call SMS is worth sending until the call is ``max_age`` old (a gateway
        outage must not deliver yesterday's "sorry we missed you"), and never past ``expiry``."""
        expires = now + self._expiry
        if d.max_age_seconds is not None and d.call_ended_at is not None:
            expires = min(expires, d.call_ended_at + timedelta(seconds=d.max_age_seconds))
        return expires

    async def _intake_loop(self) -> None:
        while True:
            item = await self._intake.get()
            if item is None:
                return
            decisions, call = item
            delay = 0.1
            while True:
                try:
                    await self.handle(decisions, call)
                    break
                except StoreError as exc:
                    # Keep the decisions and try again: idempotency keys make a repeat harmless.
                    log.error("decisions_unrecorded", error=str(exc), count=len(decisions))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    # ---- receipts -------------------------------------------------------------------------

    async def on_receipt(self, receipt: Receipt) -> ReceiptOutcome:
        """Gateway receipt handler. Raises StoreError if it cannot be recorded, so the gateway
        can refuse the receipt and let the SMSC deliver it again."""
        outcome = await self._store.apply_receipt(receipt, now=self._clock())
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
        intake = asyncio.create_task(self._intake_loop(), name="dispatch-intake")
        try:
            for row in await self._store.recover_in_flight(now=self._clock()):
                log.warning(
                    "sms_ambiguous",
                    message_id=row.id,
                    rule=row.rule,
                    to=mask_number(row.number),
                    reason=row.reason,
                    detail=row.detail,
                )
            await self._outbox_loop()
        finally:
            if not intake.done():
                with contextlib.suppress(asyncio.QueueFull):
                    self._intake.put_nowait(None)
                try:
                    await asyncio.wait_for(asyncio.shield(intake), timeout=1.0)
                except (TimeoutError, asyncio.CancelledError):
                    intake.cancel()
            self._finished.set()

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
        return self._max_in_flight - len(self._in_flight)

    def _start(self, row: MessageRow) -> int:
        if row.id in self._in_flight:
            return 0
        task = asyncio.create_task(self._send(row), name=f"sms-{row.id}")
        self._in_flight[row.id] = task
        task.add_done_callback(functools.partial(self._done, row.id))
        return 1

    def _done(self, message_id: str, _task: asyncio.Task[None]) -> None:
        task = self._in_flight.pop(message_id, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("sms_send_crashed", message_id=message_id, error=repr(task.exception()))
        if self._saturated or self._ready:
            self._scan = self._scan or self._saturated
            self._wake.set()

    def wake(self) -> None:
        """Look at the outbox now (e.g. after the clock moved, or the operator edited a row)."""
        self._scan = True
        self._wake.set()

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

    # ---- one message ----------------------------------------------------------------------

    async def _send(self, row: MessageRow) -> None:
        if row.gateway not in self._gateways:
            await self._finish(
                row,
                MessageState.FAILED,
                "unknown_gateway",
                f"no gateway named {row.gateway!r} is configured",
            )
            return
        async with self._windows[row.gateway]:
            if self._stopping:
                return
            now = self._clock()
            if row.state is MessageState.DEFERRED:
                released = await self._release(row, now)
                if released is None:
                    return
                row = released
            if row.expires_at is not None and now > row.expires_at:
                await self._finish(
                    row,
                    MessageState.EXPIRED,
                    "expiry",
                    f"not submitted before {row.expires_at.isoformat()}",
                )
                return
            name = self._route(row.gateway)
            if not await self._gateway_ready(row, name):
                return
            claimed = await self._store.claim_for_submit(row.id, now=now)
            if claimed is None:
                return  # another worker (or another agent on this database) has it
            await self._submit(claimed, name)

    async def _gateway_ready(self, row: MessageRow, name: str) -> bool:
        """Wait, without claiming the row, for a gateway that is (re)connecting. A row claimed
        while the SMSC is unreachable would come back ``ambiguous`` if the agent died
        meanwhile, though nothing had left this host. Not ready in time: retried like any
        unreachable gateway (no attempt counted)."""
        gw = self._gateways[name]
        wait_bound = getattr(gw, "wait_bound", None)
        if gw.healthy or wait_bound is None:
            return True
        try:
            await wait_bound(self._ready_wait)
        except GatewayError as exc:
            reason = exc.reason if exc.reason in GATEWAY_UNAVAILABLE else "not_bound"
            await self._retry(row, name, GatewayTemporaryError(str(exc), code=exc.code,
                                                               reason=reason))
            return False
        return True

    async def _release(self, row: MessageRow, now: datetime) -> MessageRow | None:
        # Hours may have passed since the decision: the recipient may have opted out meanwhile.
        if row.number is not None and await self._store.is_opted_out(row.number):
            await self._finish(
                row,
                MessageState.SUPPRESSED,
                "opt_out",
                "recipient opted out while deferred",
                from_=MessageState.DEFERRED,
            )
            return None
        released = await self._store.transition(
            row.id,
            MessageState.QUEUED,
            now=now,
            reason=None,
            detail="quiet hours ended",
            from_states={MessageState.DEFERRED},
            next_attempt_at=now,
            expires_at=now + self._expiry,
        )
        if released is not None:
            log.info(
                "sms_queued",
                message_id=row.id,
                rule=row.rule,
                to=mask_number(row.number),
                gateway=row.gateway,
                released=True,
            )
        return released

    def _route(self, name: str) -> str:
        backup = self._backups.get(name)
        if backup and not self._gateways[name].healthy and self._gateways[backup].healthy:
            return backup
        return name

    async def _submit(self, row: MessageRow, name: str) -> None:
        assert row.number is not None and row.text is not None
        sms = OutboundSms(
            message_id=row.id,
            to=row.number,
            sender=row.sender_id,
            text=row.text,
            dlt_template_id=row.dlt_template_id,
            dlt_entity_id=row.dlt_entity_id,
        )
        fields = {
            "message_id": row.id,
            "rule": row.rule,
            "to": mask_number(row.number),
            "gateway": name,
            "attempt": row.attempts,
        }
        try:
            result = await self._gateways[name].submit(sms)
        except GatewayTemporaryError as exc:
            await self._retry(row, name, exc)
            return
        except GatewayPermanentError as exc:
            await self._finish(row, MessageState.FAILED, exc.reason, str(exc), code=exc.code)
            log.warning("sms_failed", reason=exc.reason, error_code=exc.code, **fields)
            return
        except GatewayAmbiguousError as exc:
            await self._finish(row, MessageState.AMBIGUOUS, exc.reason, str(exc), code=exc.code)
            log.warning("sms_ambiguous", reason=exc.reason, error_code=exc.code, **fields)
            return
        except Exception as exc:  # a gateway bug: the SMSC may have the message, never resend
            await self._finish(row, MessageState.AMBIGUOUS, "gateway_error", repr(exc))
            log.exception("sms_ambiguous", reason="gateway_error", **fields)
            return
        now = self._clock()
        latency = None
        if row.call_ended_at is not None:
            latency = (now - row.call_ended_at).total_seconds() * 1000.0
        delay = 0.05
        for _ in range(8):  # the SMS is out: recording it is worth a few tries
            try:
                await self._store.record_submit(
                    row.id,
                    gateway=name,
                    smsc_ids=result.smsc_ids,
                    now=now,
                    hangup_to_submit_ms=latency,
                )
                break
            except StoreError as exc:
                log.error("sms_submit_unrecorded", error=str(exc), **fields)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        log.info(
            "sms_submitted",
            smsc_ids=list(result.smsc_ids),
            segments=result.segments,
            hangup_to_submit_ms=round(latency, 1) if latency is not None else None,
            **fields,
        )

    async def _retry(self, row: MessageRow, name: str, exc: GatewayTemporaryError) -> None:
        now = self._clock()
        fields = {
            "message_id": row.id,
            "rule": row.rule,
            "to": mask_number(row.number),
            "gateway": name,
            "attempt": row.attempts,
            "reason": exc.reason,
            "error_code": exc.code,
        }
        policy = self._retry_policy
        unavailable = exc.reason in GATEWAY_UNAVAILABLE
        limit = policy.max_attempts
        if limit is not None and row.attempts >= limit and not unavailable:
            await self._finish(
                row,
                MessageState.FAILED,
                "retries_exhausted",
                f"{row.attempts} attempts, last: {exc}",
                code=exc.code,
            )
            log.warning("sms_failed", **fields)
            return
        backup = self._backups.get(name)
        target, delay = name, policy.delay(row.attempts, self._rand)
        if unavailable:
            delay = min(delay, policy.unavailable_max_backoff * (0.5 + 0.5 * self._rand()))
        if backup is not None and self._gateways[backup].healthy:
            target = backup
            if (
                row.id not in self._failed_over
            ):  # the first switch is immediate; later ones back off
                self._failed_over.add(row.id)
                delay = 0.0
        next_at = now + timedelta(seconds=delay)
        if row.expires_at is not None and next_at > row.expires_at:
            await self._finish(
                row,
                MessageState.EXPIRED,
                "expiry",
                f"retry would be after expiry; last: {exc}",
                code=exc.code,
            )
            return
        reason = "failover" if target != name else "retry"
        await self._store.transition(
            row.id,
            MessageState.QUEUED,
            now=now,
            reason=reason,
            detail=f"{name}: {exc}" + (f"; next via {target}" if target != name else ""),
            from_states={MessageState.QUEUED},
            next_attempt_at=next_at,
            submitting_since=None,
            error_code=None if exc.code is None else str(exc.code),
            gateway=target,
        )
        log.info("sms_retry_scheduled", next_gateway=target, delay_s=round(delay, 3), **fields)
        if self._next_due is None or next_at < self._next_due:
            self._next_due = next_at
        if delay == 0.0:
            self.wake()
        else:
            self._wake.set()  # the loop re-times its wait to this retry

    async def _finish(
        self,
        row: MessageRow,
        state: MessageState,
        reason: str,
        detail: str,
        *,
        code: int | str | None = None,
        from_: MessageState = MessageState.QUEUED,
    ) -> None:
        await self._store.transition(
            row.id,
            state,
            now=self._clock(),
            reason=reason,
            detail=detail,
            from_states={from_},
            submitting_since=None,
            next_attempt_at=None,
            error_code=None if code is None else str(code),
        )
        if state is MessageState.SUPPRESSED:
            log.info(
                "sms_suppressed",
                message_id=row.id,
                rule=row.rule,
                reason=reason,
                to=mask_number(row.number),
            )
        elif state is MessageState.EXPIRED:
            log.warning(
                "sms_expired",
                message_id=row.id,
                rule=row.rule,
                reason=reason,
                to=mask_number(row.number),
            )
