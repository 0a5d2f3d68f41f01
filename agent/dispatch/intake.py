"""The dispatcher's intake: decisions -> policy -> one durable outbox row each."""

from __future__ import annotations

import asyncio
import collections
from datetime import datetime, timedelta
from typing import Any

import structlog

from agent.dispatch.retry import Clock, mask_number
from agent.metrics import Metrics
from agent.models import CallRecord, Decision, MessageState
from agent.sms.policy import Limits, evaluate
from agent.sms.ratecount import RefusalBurst, SendCounters
from agent.store.base import MessageRow, Store

log = structlog.get_logger(__name__)

class IntakeMixin:
    """Part of ``Dispatcher`` (see there for who owns which piece of state): records what the
    rules decided. Its only hand-off to the worker is appending a queued row to ``_ready`` and
    setting ``_wake``, so a fresh message starts without an outbox query."""

    # Set by Dispatcher.__init__.
    _store: Store
    _limits: Limits
    _dry_run: bool
    _clock: Clock
    _expiry: timedelta
    _ready: collections.deque[MessageRow]
    _wake: asyncio.Event
    _metrics: Metrics | None
    _counters: SendCounters | None
    _counters_lock: asyncio.Lock
    _bursts: RefusalBurst

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        """New limits (a rules reload): the counters start again from the store."""
        self._limits = limits
        self._counters = None

    async def _send_counters(self) -> SendCounters:
        """The rate-limit counters, seeded from the store the first time (and after a reload):
        every text sent within the longest window is counted once, then kept up in memory."""
        async with self._counters_lock:
            if self._counters is None:
                limits = self._limits
                counters = SendCounters(limits)
                span = limits.longest_window
                if span:
                    counters.seed(await self._store.sent_since(self._clock() - span))
                if self._limits is limits:
                    self._counters = counters
                return counters
            return self._counters

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

    async def _handle_one(
        self, d: Decision, call: CallRecord | None = None, *, confirms_opt_out: bool = False
    ) -> MessageRow:
        """``confirms_opt_out``: the one text an opted-out number may get (the STOP
        acknowledgement); every other policy still applies to it."""
        counters = await self._send_counters()
        now = self._clock()
        facts = None
        if d.number is not None and d.suppress is None:
            facts = await self._store.policy_facts(d.number, d.rule)
        try:
            outcome = evaluate(
                d,
                now=now,
                opted_out=(facts.opted_out and not confirms_opt_out) if facts else False,
                dnd=facts.dnd if facts else False,
                last_sent_at=facts.last_sent_at if facts else None,
                limits=self._limits,
                dry_run=self._dry_run,
                sent=counters.counts(d.recipient, d.number, now),
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
        counted = state is not MessageState.SUPPRESSED
        if counted:  # counted before the await, so a concurrent intake sees it
            counters.add(d.recipient, d.number, now)
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
        if counted and not created:
            counters.discard(d.recipient, d.number, now)
        if created and state is MessageState.SUPPRESSED:
            self._note_refusal(row.reason, now)
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

    def _note_refusal(self, reason: str | None, now: datetime) -> None:
        burst = self._bursts.note(reason, now)
        if burst is None:
            return
        log.warning("sms_refusal_burst", reason=burst.reason, count=burst.count,
                    window_seconds=burst.window_seconds,
                    hint="SMS pumping, or a limit or allowed_countries set too tight")
        if self._metrics is not None:
            self._metrics.refusal_burst(burst.reason)

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
