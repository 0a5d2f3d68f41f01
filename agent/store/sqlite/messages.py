"""The outbox: inserting messages, moving them through their states, and reading them back."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from agent.models import Decision, MessageState, ReceiptState
from agent.store.base import MessageEvent, MessageFilter, MessageRow, check_transition_fields
from agent.store.histpack import unpack_events
from agent.store.packing import (
    RECIPIENT_CODES,
    STATES,
    TRIGGER_CODES,
    from_micros,
    id_key,
    id_sql,
    key_digest,
    label_code,
    micros,
)
from agent.store.smslog import RARE_STATES, rare_states_term
from agent.store.sqlite.receipts import apply_to_message
from agent.store.sqlite.rows import (
    RECEIPT_STATE_NAMES,
    _message,
    _time,
    created_us,
    event_now,
    stored_key,
    text_sql,
    ts,
    us,
)
from agent.store.sqlite.writer import StoreWriter


def insert_stored(
    conn: sqlite3.Connection,
    d: Decision,
    state: MessageState,
    at: str,
    reason: str | None,
    detail: str | None,
    next_attempt_at: datetime | None,
    expires_at: datetime | None,
    claim_via: str | None = None,
) -> tuple[sqlite3.Row, bool]:
    """One decision's row and its first event (in the database thread, inside the caller's
    transaction); an existing row with the same idempotency key is returned instead, with False.
    ``claim_via``: a new row is written already claimed for its first submit through that
    gateway (``claim_for_submit``'s change and event, in the same statement) when the claim
    would take it: queued, due, that gateway's. The row is as stored."""
    key = d.idempotency_key
    now = us(at)
    claim = (claim_via is not None and state is MessageState.QUEUED and claim_via == d.gateway
             and (next_attempt_at is None or micros(next_attempt_at) <= now))
    params = [
        uuid.uuid4().bytes, key_digest(key),  # the id as stored: packing.id_key
        d.call_id, d.rule, TRIGGER_CODES[d.trigger.value],
        RECIPIENT_CODES[d.recipient.value], d.number, d.template, d.gateway, d.sender_id, d.text,
        label_code("encoding", d.encoding), d.segments, label_code("category", d.category),
        d.dlt_template_id, d.dlt_entity_id, state.value, reason, detail,
        now, now if state is MessageState.QUEUED else None,
        now if state.final else None, opt_micros(next_attempt_at), opt_micros(expires_at),
        opt_micros(d.call_ended_at), d.pbx, 1 if claim else 0, now if claim else None,
    ]
    while True:
        row = conn.execute(
            "INSERT INTO messages (id, idem, call_id, rule, trigger, recipient_kind,"
            " number, template, gateway, sender_id, text, encoding, segments, category,"
            " dlt_template_id, dlt_entity_id, state, reason, detail, created_at, queued_at,"
            " final_at, next_attempt_at, expires_at, call_ended_at, pbx, attempts,"
            " submitting_since) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(idem) DO NOTHING RETURNING *",
            params,
        ).fetchone()
        if row is not None:
            break
        existing = conn.execute("SELECT * FROM messages WHERE idem = ?", (params[1],)).fetchone()
        assert existing is not None
        if stored_key(existing) == key:
            return existing, False
        # Another key with the same 64-bit digest (at a million texts a year, about once in
        # 10^7 years): the next free value holds this one; a replay walks the same way to it.
        params[1] = params[1] + 1 if params[1] < 2**63 - 1 else -(2**63)
    event_now(conn, row, at, state.value, reason, detail, first=True,
              then=_submitting(1, d.gateway) if claim else None)
    return row, True


def _submitting(attempt: int, gateway: str) -> tuple[str, str, str]:
    """The history event of a claim for a submit: (state, reason, detail)."""
    return "queued", "submitting", f"attempt {attempt} via {gateway}"


def opt_micros(dt: datetime | None) -> int | None:
    return None if dt is None else micros(dt)


def claim_row(conn: sqlite3.Connection, message_id: str, at: str,
              gateway: str | None) -> MessageRow | None:
    """``claim_for_submit`` inside the caller's transaction (in the database thread)."""
    only_via = "" if gateway is None else " AND gateway = ?"
    row = conn.execute(
        "UPDATE messages SET attempts = attempts + 1, submitting_since = ?"
        " WHERE id = ? AND state = 'queued' AND submitting_since IS NULL"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)" + only_via
        + " RETURNING *",
        (us(at), id_key(message_id), us(at)) + (() if gateway is None else (gateway,)),
    ).fetchone()
    if row is None:
        return None
    event_now(conn, row, at, *_submitting(row["attempts"], row["gateway"]))
    return _message(row)


# Due rows through the index of states (its WHERE, smslog.RARE_STATES, is in theirs).
DUE_SQL = (f"SELECT * FROM messages WHERE state IN ('queued', 'deferred') AND {RARE_STATES}"
           " AND next_attempt_at <= ? AND submitting_since IS NULL"
           " ORDER BY next_attempt_at LIMIT ?")
NEXT_DUE_SQL = ("SELECT MIN(next_attempt_at) FROM messages WHERE state IN ('queued', 'deferred')"
                f" AND {RARE_STATES} AND submitting_since IS NULL")


class MessageOps(StoreWriter):
    """Outbox rows and their event log. Each state change writes its ``message_history`` row in
    the same op, so the two never disagree."""

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
        at = ts(now)

        def op(conn: sqlite3.Connection) -> tuple[MessageRow, bool]:
            row, created = insert_stored(conn, decision, state, at, reason, detail,
                                         next_attempt_at, expires_at)
            return _message(row), created

        return await self._write_now(op)

    async def get_message(self, message_id: str) -> MessageRow | None:
        rows = await self._read_messages("SELECT * FROM messages WHERE id = ?",
                                         (id_key(message_id),))
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
        at = ts(now)
        sets = ["state = ?", "reason = ?", "detail = ?"]
        params: list[Any] = [state.value, reason, detail]
        for name, value in fields.items():
            sets.append(f"{name} = ?")
            if isinstance(value, datetime):
                value = micros(value)  # a message's times: integers (schema 19)
            params.append(value)
        if state.final and "final_at" not in fields:
            sets.append("final_at = ?")
            params.append(us(at))
        if state is MessageState.QUEUED and "queued_at" not in fields:
            sets.append("queued_at = COALESCE(queued_at, ?)")
            params.append(us(at))
        where = "id = ?"
        params.append(id_key(message_id))
        if from_states is not None:
            allowed = [s.value for s in from_states]
            where += f" AND state IN ({','.join('?' * len(allowed))})"
            params.extend(allowed)
        sql = f"UPDATE messages SET {', '.join(sets)} WHERE {where} RETURNING *"

        def op(conn: sqlite3.Connection) -> MessageRow | None:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return None
            event_now(conn, row, at, state.value, reason, detail)
            return _message(row)

        return await self._write_now(op)

    async def claim_for_submit(
        self, message_id: str, *, now: datetime, gateway: str | None = None
    ) -> MessageRow | None:
        """Mark an attempt as started (attempts+1, submitting_since) before the gateway is called.
        Returns None unless the row is queued, unclaimed, due and (``gateway`` given) still bound
        for that gateway: someone else has it, or a stale read is trying to jump its backoff or
        to undo a failover."""
        at = ts(now)
        return await self._write_now(lambda conn: claim_row(conn, message_id, at, gateway))

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
        A receipt that raced ahead of this (stored unmatched) is applied now."""
        at = ts(now)
        ids = list(dict.fromkeys(smsc_ids))

        def op(conn: sqlite3.Connection) -> MessageRow | None:
            row = conn.execute(
                "UPDATE messages SET state = CASE WHEN state IN ('queued', 'ambiguous')"
                " THEN 'submitted' ELSE state END, reason = NULL, detail = NULL,"
                " gateway = ?, smsc_ids = ?, submitted_at = ?, submitting_since = NULL,"
                " next_attempt_at = NULL, error_code = NULL, hangup_to_submit_ms = ?"
                " WHERE id = ? RETURNING *",
                (gateway, json.dumps(ids), us(at), hangup_to_submit_ms, id_key(message_id)),
            ).fetchone()
            if row is None:
                return None
            event_now(
                conn,
                row,
                at,
                "submitted",
                None,
                f"{gateway} accepted, smsc ids {','.join(ids)}",
            )
            conn.executemany(
                "INSERT OR IGNORE INTO message_smsc_ids (gateway, smsc_id, msg) VALUES (?,?,?)",
                [(gateway, i, row["ref"]) for i in ids],
            )
            msg = _message(row)
            if ids:
                pending = conn.execute(
                    f"SELECT * FROM receipts WHERE msg IS NULL AND gateway = ? AND smsc_id"
                    f" IN ({','.join('?' * len(ids))}) ORDER BY id",
                    [gateway, *ids],
                ).fetchall()
                for r in pending:
                    # Matched now: its fields say what its raw text did (schema 7).
                    conn.execute("UPDATE receipts SET msg = ?, raw = NULL WHERE id = ?",
                                 (row["ref"], r["id"]))
                    _, msg = apply_to_message(
                        conn,
                        msg,
                        ReceiptState(RECEIPT_STATE_NAMES[r["state"]]),
                        r["smsc_id"],
                        r["error_code"],
                        gateway,
                        at,
                        r["id"],
                    )
            return msg

        return await self._write_now(op)

    async def recover_in_flight(
        self, *, now: datetime, started_before: datetime | None = None
    ) -> list[MessageRow]:
        """At startup: rows whose attempt started but never finished become ambiguous (the SMSC
        may have the message) rather than being sent again. ``started_before``: only attempts
        that old (the running agent's sweep for submits nobody will finish)."""
        at = ts(now)
        stale = "" if started_before is None else " AND submitting_since < ?"
        params = () if started_before is None else (micros(started_before),)

        def op(conn: sqlite3.Connection) -> list[MessageRow]:
            rows = conn.execute(
                "UPDATE messages SET state = 'ambiguous', reason = 'interrupted',"
                " detail = 'agent stopped during submit started at '"
                f" || {text_sql('submitting_since')},"
                " submitting_since = NULL, next_attempt_at = NULL"
                f" WHERE submitting_since IS NOT NULL AND state = 'queued'{stale} RETURNING *",
                params,
            ).fetchall()
            for r in rows:
                event_now(conn, r, at, "ambiguous", "interrupted", r["detail"])
            return [_message(r) for r in rows]

        return await self._write_now(op)

    async def due_messages(self, now: datetime, limit: int) -> list[MessageRow]:
        return await self._read_messages(DUE_SQL, (micros(now), limit))

    async def next_due_at(self) -> datetime | None:
        rows = await self._read(NEXT_DUE_SQL)
        return _time(rows[0][0]) if rows else None

    async def messages_in_state(
        self, state: MessageState, *, limit: int | None = None
    ) -> list[MessageRow]:
        return await self._read_messages(
            f"SELECT * FROM messages WHERE state = ?{rare_states_term([state.value])}"
            " ORDER BY created_at LIMIT ?",
            (state.value, -1 if limit is None else limit),
        )

    async def message_events(self, message_id: str) -> list[MessageEvent]:
        rows = await self._read(
            "SELECT m.created_at, h.log FROM messages m"
            " JOIN message_history h ON h.msg = m.ref WHERE m.id = ?", (id_key(message_id),))
        if not rows:
            return []
        return [MessageEvent(message_id, from_micros(at), STATES[state], reason, detail)
                for at, state, reason, detail in unpack_events(created_us(rows[0]),
                                                               rows[0]["log"])]

    async def list_messages(self, filters: MessageFilter | None = None) -> list[MessageRow]:
        f = filters or MessageFilter()
        where: list[str] = []
        params: list[Any] = []
        if f.states:
            states = [s.value for s in f.states]
            where.append(f"state IN ({','.join('?' * len(states))})"
                         + rare_states_term(states))
            params.extend(states)
        for column, value in (
            ("rule", f.rule),
            ("call_id", f.call_id),
            ("number", f.number),
            ("gateway", f.gateway),
            ("pbx", f.pbx),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.since is not None:
            where.append("created_at >= ?")
            params.append(micros(f.since))
        if f.until is not None:
            where.append("created_at < ?")
            params.append(micros(f.until))
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if f.newest_first else "ASC"  # one time's messages by id (as text)
        sql += f" ORDER BY created_at {order}, {id_sql('id')} LIMIT ? OFFSET ?"
        params += [-1 if f.limit is None else f.limit, f.offset]
        return await self._read_messages(sql, params)

    async def latest_message_to(self, number: str) -> MessageRow | None:
        rows = await self._read_messages(
            "SELECT * FROM messages WHERE number = ? AND submitted_at IS NOT NULL"
            " ORDER BY submitted_at DESC LIMIT 1",
            (number,),
        )
        return rows[0] if rows else None
