"""One message through its gateway: ask ``steps.next_step`` what to do, do it (the shell).

Each step is performed the same way: one store transition, one log line, one metric. What
to do (release, expire, route, retry, fail over, give up) is decided in ``steps`` alone; this
module only waits (window, gateway ready), claims, submits and records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog

from agent.backoff import backoff_delay
from agent.dispatch.retry import Clock, mask_number
from agent.dispatch.steps import (
    Due,
    Final,
    Health,
    Outcome,
    PermanentFailure,
    Policy,
    Release,
    Retry,
    Step,
    Submit,
    TemporaryFailure,
    UnknownOutcome,
    Unreachable,
    next_step,
    route,
)
from agent.errors import (
    GatewayAmbiguousError,
    GatewayError,
    GatewayPermanentError,
    GatewayTemporaryError,
    StoreError,
)
from agent.gateways.base import Gateway
from agent.metrics import Metrics
from agent.models import MessageState, OutboundSms
from agent.store.base import MessageRow
from agent.store.seams import DispatchStore

log = structlog.get_logger(__name__)

@dataclass(frozen=True, slots=True)
class Wakeups:
    """How the sender tells the worker loop about a scheduled retry (it owns the timing)."""

    retry_at: Callable[[datetime, bool], None]  # (when, immediately)
    stopping: Callable[[], bool]


class Sender:
    """Sends one outbox row at a time (called by the worker for each row it starts)."""

    def __init__(self, store: DispatchStore, gateways: Mapping[str, Gateway], policy: Policy, *,
                 clock: Clock, ready_wait: float, rand: Callable[[], float],
                 metrics: Metrics | None, wakeups: Wakeups) -> None:
        self._store = store
        self._gateways = gateways
        self._policy = policy
        self._clock = clock
        self._ready_wait = ready_wait
        self._rand = rand
        self._metrics = metrics
        self._wakeups = wakeups
        # A gateway's own window (SMPP: unacknowledged submits) bounds our concurrency on it.
        self.windows = {name: asyncio.Semaphore(gw.window) for name, gw in gateways.items()}
        # Rows switched to their backup once, until they leave the outbox (submitted or final).
        self._failed_over: set[str] = set()

    def _health(self) -> Health:
        return Health(frozenset(n for n, gw in self._gateways.items() if gw.healthy),
                      frozenset(self._failed_over))

    def _decide(self, row: MessageRow, outcome: Outcome, health: Health | None = None) -> Step:
        return next_step(row, outcome, self._clock(), self._policy, health or self._health(),
                         message_id=row.id)

    async def send(self, row: MessageRow) -> None:
        health = self._health()
        if row.gateway not in self._gateways:
            await self._perform(row, self._decide(row, Due(), health))
            return
        # The window of the gateway that will carry it: a row failed over to the backup
        # must not wait, already claimed, behind the backup's own bind window.
        name = route(row.gateway, self._policy, health)
        async with self.windows[name]:
            if self._wakeups.stopping():
                return
            if row.state is MessageState.DEFERRED:
                opted_out = row.number is not None and await self._store.is_opted_out(row.number)
                released = await self._perform(row, self._decide(row, Due(opted_out), health))
                if released is None:
                    return
                row = released
            step = self._decide(row, Due(), health)
            if not isinstance(step, Submit):
                await self._perform(row, step)
                return
            if not await self._gateway_ready(row, name):
                return
            # ``row`` may be a read from before another worker failed it over to the backup:
            # the claim holds only while the row is still bound for the gateway read here.
            claimed = await self._store.claim_for_submit(row.id, now=self._clock(),
                                                         gateway=row.gateway)
            if claimed is None:
                return  # another worker (or agent) has it, or moved it: the next poll rereads
            await self._submit(claimed, name)

    def ready_route(self, gateway: str) -> str | None:
        """The gateway a fresh row for ``gateway`` would go through now, if it can go at once:
        that gateway is up (no failover pending) and its window has room. None otherwise."""
        if gateway not in self._gateways or self._wakeups.stopping():
            return None
        health = self._health()
        name = route(gateway, self._policy, health)
        if name != gateway or name not in health.healthy or self.windows[name].locked():
            return None
        return name

    async def take_window(self, name: str) -> bool:
        """Take a slot of ``name``'s window without waiting (False when it is full). The slot
        is given back by ``send_claimed``, or by ``give_window`` if unused."""
        window = self.windows[name]
        if window.locked():
            return False
        await window.acquire()  # free: returns without suspending
        return True

    def give_window(self, name: str) -> None:
        self.windows[name].release()

    async def send_claimed(self, row: MessageRow, name: str) -> None:
        """Submit a row whose first attempt the store claimed in the transaction that queued it
        (``NewMessage.claim_via``), holding the slot of ``name``'s window taken for it then."""
        try:
            await self._submit(row, name)
        finally:
            self.windows[name].release()

    async def _gateway_ready(self, row: MessageRow, name: str) -> bool:
        """Wait, without claiming the row, for a gateway that is (re)connecting. A row claimed
        while the SMSC is unreachable would come back ``ambiguous`` if the agent died
        meanwhile, though nothing had left this host. Not ready in time: retried like any
        unreachable gateway (no attempt counted)."""
        gw = self._gateways[name]
        if gw.healthy:
            return True
        try:
            await gw.wait_ready(self._ready_wait)
        except GatewayError as exc:
            outcome = Unreachable(name, str(exc), exc.reason, exc.code)
            await self._perform(row, self._decide(row, outcome), via=name, cause=exc.reason)
            return False
        return True

    async def _submit(self, row: MessageRow, name: str) -> None:
        assert row.number is not None and row.text is not None
        sms = OutboundSms(
            message_id=row.id, to=row.number, sender=row.sender_id, text=row.text,
            dlt_template_id=row.dlt_template_id, dlt_entity_id=row.dlt_entity_id,
            encoding=row.encoding, segments=row.segments, expires_at=row.expires_at,
        )
        outcome: Outcome
        try:
            started = time.perf_counter()
            result = await self._gateways[name].submit(sms)
        except GatewayTemporaryError as exc:
            outcome = TemporaryFailure(name, str(exc), exc.reason, exc.code, exc.retry_after)
        except GatewayPermanentError as exc:
            outcome = PermanentFailure(name, str(exc), exc.reason, exc.code)
        except GatewayAmbiguousError as exc:
            outcome = UnknownOutcome(name, str(exc), exc.reason, exc.code)
        except Exception as exc:  # a gateway bug: the SMSC may have the message, never resend
            await self._perform(row, self._decide(row, UnknownOutcome(name, repr(exc))),
                                via=name, error=repr(exc))
            return
        else:
            await self._record_submit(row, name, result.smsc_ids, result.segments,
                                      time.perf_counter() - started)
            return
        await self._perform(row, self._decide(row, outcome), via=name, cause=outcome.reason)

    async def _record_submit(self, row: MessageRow, name: str, smsc_ids: tuple[str, ...],
                             segments: int, took: float) -> None:
        self._failed_over.discard(row.id)  # out: never retried, nothing left to remember
        fields = _fields(row, gateway=name, attempt=row.attempts)
        now = self._clock()
        latency = None
        if row.call_ended_at is not None:
            latency = (now - row.call_ended_at).total_seconds() * 1000.0
        for attempt in range(8):  # the SMS is out: recording it is worth a few tries
            try:
                await self._store.record_submit(row.id, gateway=name, smsc_ids=smsc_ids,
                                                now=now, hangup_to_submit_ms=latency)
                break
            except StoreError as exc:
                log.error("sms_submit_unrecorded", error=str(exc), **fields)
                await asyncio.sleep(backoff_delay(attempt, 0.05, 2.0, rand=self._rand))
        else:
            # Left mid-submit in the store: it turns ambiguous at the next start, never resent.
            log.error("sms_submitted_unrecorded", smsc_ids=list(smsc_ids), **fields)
            return
        if self._metrics is not None:
            self._metrics.gateway_submitted(name, took)
            self._metrics.message_state(MessageState.SUBMITTED)
            if latency is not None:
                self._metrics.hangup_to_submit(latency / 1000.0)
        log.info("sms_submitted", smsc_ids=list(smsc_ids), segments=segments,
                 hangup_to_submit_ms=round(latency, 1) if latency is not None else None,
                 **fields)

    async def _perform(self, row: MessageRow, step: Step, *, via: str | None = None,
                       **log_fields: object) -> MessageRow | None:
        """One store transition, one log line, one metric. Returns the row as it now stands
        (None when another worker moved it first). ``via``: the gateway just tried."""
        now = self._clock()
        match step:
            case Release(expires_at=expires_at, detail=detail):
                done = await self._store.transition(
                    row.id, step.state, now=now, reason=None, detail=detail,
                    from_states={step.from_state}, next_attempt_at=now, expires_at=expires_at)
                if done is not None:
                    log.info("sms_queued", **_fields(row, gateway=row.gateway), released=True)
                return done
            case Retry():
                if step.first_failover:
                    self._failed_over.add(row.id)
                done = await self._store.transition(
                    row.id, step.state, now=now, reason=step.reason, detail=step.detail,
                    from_states={step.from_state}, next_attempt_at=step.at,
                    submitting_since=None, error_code=_code(step.code), gateway=step.gateway)
                log.info("sms_retry_scheduled", next_gateway=step.gateway,
                         delay_s=round(step.delay, 3), error_code=step.code,
                         **_fields(row, gateway=via or row.gateway, attempt=row.attempts),
                         **log_fields)
                self._wakeups.retry_at(step.at, step.delay == 0.0)
                return done
            case Final():
                self._failed_over.discard(row.id)
                done = await self._store.transition(
                    row.id, step.state, now=now, reason=step.reason, detail=step.detail,
                    from_states={step.from_state}, submitting_since=None,
                    next_attempt_at=None, error_code=_code(step.code))
                if self._metrics is not None:
                    self._metrics.message_state(step.state, step.reason)
                extra = {"gateway": via, "attempt": row.attempts} if via else {}
                (log.warning if step.warn else log.info)(
                    step.event, **_fields(row, **extra), reason=step.reason, error_code=step.code,
                    **log_fields)
                return done
        raise TypeError(f"not a step to perform: {step!r}")


def _fields(row: MessageRow, **extra: object) -> dict[str, object]:
    return {"message_id": row.id, "rule": row.rule, "to": mask_number(row.number), **extra}


def _code(code: int | str | None) -> str | None:
    return None if code is None else str(code)
