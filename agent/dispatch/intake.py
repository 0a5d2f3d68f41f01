"""The dispatcher's intake: decisions -> policy -> one durable outbox row each."""

from __future__ import annotations

import asyncio
import collections
from datetime import datetime, timedelta
from typing import Any

import structlog

from agent.dispatch.retry import Clock, mask_number
from agent.models import CallRecord, Decision, MessageState
from agent.sms.policy import Limits, evaluate
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
