"""The outbox on PostgreSQL: inserting messages, moving them through their states, reading them.

Several agents may share the database: the idempotency key's unique index decides which
insert creates a message, and a claim takes the row with ``FOR UPDATE SKIP LOCKED`` so an agent
never waits behind another's claim of the same row (it simply does not get it)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from agent.models import Decision, MessageState, ReceiptState
from agent.store.base import MessageEvent, MessageFilter, MessageRow, check_transition_fields
from agent.store.postgres.group import Grouped
from agent.store.postgres.pool import (
    PgPool,
    _sequence,
    event,
    lock_smsc_ids,
    message_row,
    utc,
)
from agent.store.postgres.receipts import apply_to_message

#: One claim: (message id, when, the gateway it must still be bound for).
_Claim = tuple[str, datetime | None, str | None]

# A submit older than this whose agent has not come back is an orphan another agent may call
# ambiguous (far longer than any gateway's submit timeout).
STALE_SUBMIT = timedelta(minutes=5)


async def insert_row(
    conn: asyncpg.Connection,
    d: Decision,
    state: MessageState,
    at: datetime | None,
    reason: str | None,
    detail: str | None,
    next_attempt_at: datetime | None,
    expires_at: datetime | None,
    writer: str,
) -> tuple[MessageRow, bool]:
    """One decision's row and its first event, inside the caller's transaction; an existing row
    with the same idempotency key is returned instead, with False. ``writer``: this agent
    (``PgPool.writer``)."""
    params = (
        uuid.uuid4().hex, d.idempotency_key, d.call_id, d.rule, d.trigger.value,
        d.recipient.value, d.number, d.template, d.gateway, d.sender_id, d.text, d.encoding,
        d.segments, d.category, d.dlt_template_id, d.dlt_entity_id, state.value, reason,
        detail, at, at if state is MessageState.QUEUED else None,
        at if state.final else None, utc(next_attempt_at), utc(expires_at),
        utc(d.call_ended_at), at, d.pbx, writer,
    )
    # A concurrent insert of the same key (another agent on the same PBX) makes this one wait
    # for that transaction, then do nothing: exactly one row, one winner. The row and its
    # first event are one statement: outside a transaction, one commit.
    row = await conn.fetchrow(
        "WITH ins AS (INSERT INTO messages (id, idempotency_key, call_id, rule, trigger,"
        " recipient_kind, number, template, gateway, sender_id, text, encoding, segments,"
        " category, dlt_template_id, dlt_entity_id, state, reason, detail, created_at,"
        " queued_at, final_at, next_attempt_at, expires_at, call_ended_at, updated_at, pbx,"
        " written_by) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,"
        "$18,$19,$20,$21,$22,$23,$24,$25,$26,$27,$28)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *),"
        " ev AS (INSERT INTO message_events (message_id, at, state, reason, detail)"
        "  SELECT id, created_at, state, reason, detail FROM ins)"
        " SELECT * FROM ins",
        *params,
    )
    if row is None:
        existing = await conn.fetchrow(
            "SELECT * FROM messages WHERE idempotency_key = $1", d.idempotency_key
        )
        assert existing is not None
        return message_row(existing), False
    return message_row(row), True


class MessageOps(PgPool):
    """Outbox rows and their event log; each state change writes its event in the same
    transaction."""

    async def insert_message(
        self,
        decision: Decision,
        *,
        state: MessageState,
        now: datetime,
        reason: str | None = None,
        detail: str | None = None,
        next_attempt_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[MessageRow, bool]:
        async with self._tx(single=True) as conn:
            return await insert_row(conn, decision, state, utc(now), reason, detail,
                                    next_attempt_at, expires_at, self.writer)

    async def get_message(self, message_id: str) -> MessageRow | None:
        rows = await self._read_messages("SELECT * FROM messages WHERE id = $1", message_id)
        return rows[0] if rows else None

    async def transition(
        self,
        message_id: str,
        state: MessageState,
        *,
        now: datetime,
        reason: str | None = None,
        detail: str | None = None,
        from_states: Collection[MessageState] | None = None,
        **fields: Any,
    ) -> MessageRow | None:
        """Move a row to ``state`` (recording the event), optionally only from ``from_states``.
        Returns the new row, or None when the row is missing or not in an allowed state."""
        check_transition_fields(fields)
        at = utc(now)
        params: list[Any] = [state.value, reason, detail, at]
        sets = ["state = $1", "reason = $2", "detail = $3", "updated_at = $4"]

        def param(value: Any) -> str:
            params.append(utc(value) if isinstance(value, datetime) else value)
            return f"${len(params)}"

        for name, value in fields.items():
            sets.append(f"{name} = {param(value)}")
        if state.final and "final_at" not in fields:
            sets.append("final_at = $4")
        if state is MessageState.QUEUED and "queued_at" not in fields:
            sets.append("queued_at = COALESCE(queued_at, $4)")
        where = f"id = {param(message_id)}"
        if from_states is not None:
            where += f" AND state = ANY({param([s.value for s in from_states])}::text[])"
        sql = (f"WITH u AS (UPDATE messages SET {', '.join(sets)} WHERE {where} RETURNING *),"
               " ev AS (INSERT INTO message_events (message_id, at, state, reason, detail)"
               "  SELECT id, $4, $1, $2, $3 FROM u)"
               " SELECT * FROM u")
        async with self._tx(single=True) as conn:
            row = await conn.fetchrow(sql, *params)
            return None if row is None else message_row(row)

    _claims: Grouped[_Claim, MessageRow | None] | None = None

    async def claim_for_submit(
        self, message_id: str, *, now: datetime, gateway: str | None = None
    ) -> MessageRow | None:
        """Mark an attempt as started (attempts+1, submitting_since, claimed_by) before the
        gateway is called. None unless the row is queued, unclaimed, due, (``gateway`` given)
        still bound for that gateway, and not being claimed by another agent this very moment
        (SKIP LOCKED: that agent has it). The claims that arrive while one is in flight go
        together, as one statement (group.py)."""
        if self._claims is None:
            self._claims = Grouped(self._claim, key=lambda c: c[0])
        return await self._claims((message_id, utc(now), gateway))

    async def _claim(self, claims: Sequence[_Claim]) -> list[MessageRow | None]:
        async with self._tx(single=True) as conn:
            rows = await conn.fetch(
                "WITH w AS (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[])"
                "  AS w(id, at, gw)),"
                " c AS (UPDATE messages m SET attempts = m.attempts + 1,"
                "  submitting_since = w.at, claimed_by = $4, updated_at = w.at FROM w"
                "  WHERE m.id = w.id AND m.id IN (SELECT x.id FROM messages x JOIN w y"
                "   ON x.id = y.id WHERE x.state = 'queued' AND x.submitting_since IS NULL"
                "   AND (x.next_attempt_at IS NULL OR x.next_attempt_at <= y.at)"
                "   AND (y.gw IS NULL OR x.gateway = y.gw)"
                "   FOR UPDATE OF x SKIP LOCKED) RETURNING m.*),"
                " ev AS (INSERT INTO message_events (message_id, at, state, reason, detail)"
                "  SELECT id, submitting_since, 'queued', 'submitting',"
                "  'attempt ' || attempts || ' via ' || gateway FROM c)"
                " SELECT * FROM c",
                [c[0] for c in claims], [c[1] for c in claims], [c[2] for c in claims],
                self.owner,
            )
        got = {r["id"]: message_row(r) for r in rows}
        return [got.get(c[0]) for c in claims]

    async def record_submit(
        self,
        message_id: str,
        *,
        gateway: str,
        smsc_ids: Sequence[str],
        now: datetime,
        hangup_to_submit_ms: float | None,
    ) -> MessageRow | None:
        """The gateway accepted the message: store its ids and move queued/ambiguous -> submitted.
        A receipt that raced ahead of this (stored unmatched, maybe by another agent) is applied
        now."""
        at = utc(now)
        ids = _sequence(smsc_ids)
        # One statement: the lock on the ids, the row, its event and its ids (functions.py).
        async with self._tx(single=True) as conn:
            row = await conn.fetchrow(
                "SELECT (s.m).*, s.receipts_waiting FROM aftercall_record_submit("
                "$1, $2, $3::text[], $4, $5, $6) s",
                message_id, gateway, ids, at, hangup_to_submit_ms,
                f"{gateway} accepted, smsc ids {','.join(ids)}",
            )
        if row is None:
            return None
        if not row["receipts_waiting"]:
            return message_row(row)
        async with self._tx() as conn:  # receipts that came before the submit was recorded
            await lock_smsc_ids(conn, gateway, ids)
            row = await conn.fetchrow("SELECT * FROM messages WHERE id = $1 FOR UPDATE",
                                      message_id)
            assert row is not None
            msg = message_row(row)
            pending = await conn.fetch(
                "UPDATE receipts SET message_id = $1 WHERE message_id IS NULL"
                " AND gateway = $2 AND smsc_id = ANY($3::text[]) RETURNING *",
                message_id, gateway, ids,
            )
            for r in sorted(pending, key=lambda r: r["id"]):
                _, msg = await apply_to_message(
                    conn, msg, ReceiptState(r["state"]), r["smsc_id"], r["error_code"],
                    gateway, at, r["id"],
                )
            return msg

    async def recover_in_flight(
        self, *, now: datetime, started_before: datetime | None = None
    ) -> list[MessageRow]:
        """At startup: rows whose attempt started but never finished become ambiguous (the SMSC
        may have the message) rather than being sent again. With an ``owner``, only this agent's
        own (and orphans older than STALE_SUBMIT): a live peer's submit is not ours to judge.
        ``started_before``: only attempts that old, whoever started them (the running agents'
        sweep for submits a dead peer will never finish)."""
        at = utc(now)
        params: list[Any] = [at]
        if started_before is not None:
            mine = " AND submitting_since < $2"
            params.append(utc(started_before))
        elif self.owner is None:
            mine = ""
        else:
            mine = " AND (claimed_by IS NULL OR claimed_by = $2 OR submitting_since < $3)"
            params += [self.owner, at - STALE_SUBMIT]
        async with self._tx() as conn:
            rows = await conn.fetch(
                "UPDATE messages SET state = 'ambiguous', reason = 'interrupted',"
                " detail = 'agent stopped during submit started at '"
                " || to_char(submitting_since AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
                " submitting_since = NULL, next_attempt_at = NULL, updated_at = $1"
                f" WHERE submitting_since IS NOT NULL AND state = 'queued'{mine} RETURNING *",
                *params,
            )
            for r in rows:
                await event(conn, r["id"], at, "ambiguous", "interrupted", r["detail"])
            return [message_row(r) for r in rows]

    async def due_messages(self, now: datetime, limit: int) -> list[MessageRow]:
        return await self._read_messages(
            "SELECT * FROM messages WHERE state IN ('queued', 'deferred')"
            " AND next_attempt_at <= $1 AND submitting_since IS NULL"
            " ORDER BY next_attempt_at LIMIT $2",
            utc(now), limit,
        )

    async def next_due_at(self) -> datetime | None:
        rows = await self._read(
            "SELECT MIN(next_attempt_at) FROM messages WHERE state IN ('queued', 'deferred')"
            " AND submitting_since IS NULL"
        )
        return rows[0][0] if rows else None

    async def messages_in_state(
        self, state: MessageState, *, limit: int | None = None
    ) -> list[MessageRow]:
        return await self._read_messages(
            "SELECT * FROM messages WHERE state = $1 ORDER BY created_at, id LIMIT $2",
            state.value, limit,
        )

    async def message_events(self, message_id: str) -> list[MessageEvent]:
        rows = await self._read(
            "SELECT * FROM message_events WHERE message_id = $1 ORDER BY id", message_id
        )
        return [
            MessageEvent(r["message_id"], r["at"], MessageState(r["state"]), r["reason"],
                         r["detail"])
            for r in rows
        ]

    async def list_messages(self, filters: MessageFilter | None = None) -> list[MessageRow]:
        f = filters or MessageFilter()
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if f.states:
            where.append(f"state = ANY({param([s.value for s in f.states])}::text[])")
        for column, value in (
            ("rule", f.rule),
            ("call_id", f.call_id),
            ("number", f.number),
            ("gateway", f.gateway),
            ("pbx", f.pbx),
        ):
            if value is not None:
                where.append(f"{column} = {param(value)}")
        if f.since is not None:
            where.append(f"created_at >= {param(utc(f.since))}")
        if f.until is not None:
            where.append(f"created_at < {param(utc(f.until))}")
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if f.newest_first else "ASC"
        sql += f" ORDER BY created_at {order}, id LIMIT {param(f.limit)} OFFSET {param(f.offset)}"
        return await self._read_messages(sql, *params)

    async def latest_message_to(self, number: str) -> MessageRow | None:
        rows = await self._read_messages(
            "SELECT * FROM messages WHERE number = $1 AND submitted_at IS NOT NULL"
            " ORDER BY submitted_at DESC LIMIT 1",
            number,
        )
        return rows[0] if rows else None

