"""One message through the dispatcher: release, expiry, routing, claim, submit, retry, finish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from agent.backoff import backoff_delay
from agent.dispatch.retry import GATEWAY_UNAVAILABLE, Clock, RetryPolicy, mask_number
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
from agent.store.base import MessageRow, Store

log = structlog.get_logger(__name__)


class SendMixin:
    """Part of ``Dispatcher`` (see there for who owns which piece of state): ``_send`` is the
    body of one in-flight task, started by the worker's ``_start``. A scheduled retry reaches
    the worker through ``_next_due`` and ``_wake``, never by touching ``_in_flight``."""

    # Set by Dispatcher.__init__.
    _store: Store
    _gateways: dict[str, Gateway]
    _backups: dict[str, str]
    _clock: Clock
    _retry_policy: RetryPolicy
    _expiry: timedelta
    _ready_wait: float
    _rand: Callable[[], float]
    _windows: dict[str, asyncio.Semaphore]
    _wake: asyncio.Event
    _failed_over: set[str]
    _next_due: datetime | None
    _stopping: bool
    _metrics: Metrics | None

    if TYPE_CHECKING:
        def wake(self) -> None: ...

    async def _send(self, row: MessageRow) -> None:
        if row.gateway not in self._gateways:
            await self._finish(
                row,
                MessageState.FAILED,
                "unknown_gateway",
                f"no gateway named {row.gateway!r} is configured",
            )
            return
        # The window of the gateway that will carry it: a row failed over to the backup
        # must not wait, already claimed, behind the backup's own bind window.
        name = self._route(row.gateway)
        async with self._windows[name]:
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
            if not await self._gateway_ready(row, name):
                return
            # ``row`` may be a read from before another worker failed it over to the backup:
            # the claim holds only while the row is still bound for the gateway read here.
            claimed = await self._store.claim_for_submit(row.id, now=now, gateway=row.gateway)
            if claimed is None:
                return  # another worker (or agent) has it, or moved it: the next poll rereads
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
            encoding=row.encoding,
            segments=row.segments,
            expires_at=row.expires_at,
        )
        fields = {
            "message_id": row.id,
            "rule": row.rule,
            "to": mask_number(row.number),
            "gateway": name,
            "attempt": row.attempts,
        }
        try:
            started = time.perf_counter()
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
        for attempt in range(8):  # the SMS is out: recording it is worth a few tries
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
                await asyncio.sleep(backoff_delay(attempt, 0.05, 2.0, rand=self._rand))
        else:
            # Left mid-submit in the store: it turns ambiguous at the next start, never resent.
            log.error("sms_submitted_unrecorded", smsc_ids=list(result.smsc_ids), **fields)
            return
        if self._metrics is not None:
            self._metrics.gateway_submitted(name, time.perf_counter() - started)
            self._metrics.message_state(MessageState.SUBMITTED)
            if latency is not None:
                self._metrics.hangup_to_submit(latency / 1000.0)
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
        target, delay = name, policy.delay(row.attempts, self._rand, unavailable=unavailable)
        if exc.retry_after is not None:  # the gateway said when (HTTP 429/503 Retry-After)
            delay = max(delay, exc.retry_after)
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
        if self._metrics is not None:
            self._metrics.message_state(state, reason)
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
