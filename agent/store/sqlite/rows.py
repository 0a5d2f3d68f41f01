"""How values are stored and read back: the one time form, row -> MessageRow, query helpers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from agent.models import MessageState, RecipientKind, Trigger
from agent.store.base import MessageRow
from agent.store.sqlite.packing import STATE_CODES, micros
from agent.store.stamps import from_ts as _dt
from agent.store.stamps import ts  # noqa: F401 (the sqlite modules import it from here)


def _now() -> datetime:
    return datetime.now(UTC)


def _message(r: sqlite3.Row) -> MessageRow:
    return MessageRow(
        id=r["id"],
        idempotency_key=r["idempotency_key"],
        call_id=r["call_id"],
        rule=r["rule"],
        trigger=Trigger(r["trigger"]),
        recipient_kind=RecipientKind(r["recipient_kind"]),
        number=r["number"],
        template=r["template"],
        gateway=r["gateway"],
        sender_id=r["sender_id"],
        text=r["text"],
        encoding=r["encoding"],
        segments=r["segments"],
        category=r["category"],
        dlt_template_id=r["dlt_template_id"],
        dlt_entity_id=r["dlt_entity_id"],
        state=MessageState(r["state"]),
        reason=r["reason"],
        detail=r["detail"],
        attempts=r["attempts"],
        smsc_ids=tuple(json.loads(r["smsc_ids"])),
        error_code=r["error_code"],
        created_at=_dt(r["created_at"]),
        queued_at=_dt(r["queued_at"]),
        submitted_at=_dt(r["submitted_at"]),
        final_at=_dt(r["final_at"]),
        next_attempt_at=_dt(r["next_attempt_at"]),
        submitting_since=_dt(r["submitting_since"]),
        expires_at=_dt(r["expires_at"]),
        call_ended_at=_dt(r["call_ended_at"]),
        hangup_to_submit_ms=r["hangup_to_submit_ms"],
        updated_at=_dt(r["updated_at"]),
        pbx=r["pbx"],
    )


async def _rows(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _one(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    rows = await _rows(conn, sql, params)
    return rows[0] if rows else None


_HISTORY_INSERT = (
    "INSERT INTO message_history (message_id, seq, at, state, reason, detail) VALUES"
    " (?, (SELECT coalesce(max(seq), 0) + 1 FROM message_history WHERE message_id = ?),"
    " ?, ?, ?, ?)"
)


def _history_params(message_id: str, at: str, state: str, reason: str | None,
                    detail: str | None) -> tuple[Any, ...]:
    return (message_id, message_id, micros(datetime.fromisoformat(at)), STATE_CODES[state],
            reason, detail)


def event_now(
    conn: sqlite3.Connection,
    message_id: str,
    at: str,
    state: str,
    reason: str | None,
    detail: str | None,
) -> None:
    """One row of a message's state history (in the database thread, inside the caller's
    transaction): its position is the next after the message's last."""
    conn.execute(_HISTORY_INSERT, _history_params(message_id, at, state, reason, detail))
