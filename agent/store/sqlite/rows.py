"""How values are stored and read back: the one time form, row -> MessageRow, query helpers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from agent.models import idempotency_key
from agent.store.base import MessageRow, message_from_row
from agent.store.histpack import pack_event
from agent.store.packing import (
    MESSAGE_LABELS,
    STATE_CODES,
    from_micros,
    id_word,
    label_word,
    micros,
)
from agent.store.segments import RECEIPT_TARGET
from agent.store.stamps import from_ts as _dt
from agent.store.stamps import ts  # noqa: F401 (the sqlite modules import it from here)


def _now() -> datetime:
    return datetime.now(UTC)


def stored_key(r: sqlite3.Row) -> str:
    """A row's idempotency key (schema 15 stores its digest, ``idem``): the one its columns make,
    as every decision's is made; ``pruned:ID`` once retention has taken its number."""
    if r["idem"] is None:
        return f"pruned:{id_word(r['id'])}"
    return idempotency_key(r["pbx"], r["call_id"], r["rule"],
                           label_word("recipient_kind", r["recipient_kind"]), r["number"])


def _time(value: str | int | None) -> datetime | None:
    """A message's stored time: integer microseconds (all of them since schema 19), or the
    fixed-width text a file not yet upgraded holds."""
    return from_micros(value) if isinstance(value, int) else _dt(value)


def text_sql(col: str) -> str:
    """SQL: an integer-microseconds time as the fixed-width UTC text ("...T09:00:00.000001Z"),
    the form the SMS log and a message's details show."""
    return (f"(strftime('%Y-%m-%dT%H:%M:%S', {col} / 1000000, 'unixepoch')"
            f" || printf('.%06dZ', {col} % 1000000))")


def us(at: str | None) -> int | None:
    """A fixed-width UTC text time as integer microseconds (None stays None)."""
    return None if at is None else micros(datetime.fromisoformat(at))


# What a receipt said, by the state it moved its message to (RECEIPT_TARGET is one to one).
_RECEIPT_SAID = {target.value: said.value for said, target in RECEIPT_TARGET.items()}


def receipt_detail(gateway: str, state: str, smsc_ids: Sequence[str]) -> str | None:
    """The detail a receipt gave a one-part message ("smsc receipt delivered for S1"), as the
    row says it: its gateway, state and only segment id. Schema 21 stores '' for it."""
    said = _RECEIPT_SAID.get(state)
    if said is None or len(smsc_ids) != 1:
        return None
    return f"{gateway} receipt {said} for {smsc_ids[0]}"


def detail_sql(m: str) -> str:
    """SQL: a message's detail as it reads (``receipt_detail`` where it is stored as '')."""
    said = " ".join(f"WHEN '{s}' THEN '{w}'" for s, w in _RECEIPT_SAID.items())
    return (f"(CASE WHEN {m}.detail = '' AND {m}.reason = 'receipt' THEN {m}.gateway"
            f" || ' receipt ' || CASE {m}.state {said} END || ' for '"
            f" || json_extract({m}.smsc_ids, '$[0]') ELSE {m}.detail END)")


def _message(r: sqlite3.Row) -> MessageRow:
    # Its labels stored as codes (schema 25) read as their words, as the shared reader wants.
    d = dict(zip(r.keys(), r, strict=True))
    d["id"] = id_word(d["id"])  # its 16 bytes (schema 26) as the hex text
    for c in MESSAGE_LABELS:
        d[c] = label_word(c, d[c])
    m = message_from_row(d, json.loads(r["smsc_ids"]), _time, key=stored_key(r))
    if m.detail == "" and m.reason == "receipt":
        return replace(m, detail=receipt_detail(m.gateway, m.state.value, m.smsc_ids))
    return m


async def _rows(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _one(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    rows = await _rows(conn, sql, params)
    return rows[0] if rows else None


# A message's history is one row, named by ``messages.ref``, its events packed in ``log`` and
# timed from the message's ``created_at`` (schema 23, agent.store.histpack): a new event is
# appended to it, without reading it. An UPDATE when the row is there (a plain one costs 30%
# less than an upsert that meets its conflict), the upsert for a new message's first.
_HISTORY_ADD = "UPDATE message_history SET log = CAST(log || ? AS BLOB) WHERE msg = ?"
_HISTORY_NEW = (
    "INSERT INTO message_history (msg, log) VALUES (?, ?)"
    " ON CONFLICT(msg) DO UPDATE SET log = CAST(log || excluded.log AS BLOB)"
)


def created_us(r: sqlite3.Row) -> int:
    """A message row's ``created_at`` in microseconds: the time its history counts from."""
    created = r["created_at"]
    if isinstance(created, int):  # schema 19
        return created
    t = _time(created)
    assert t is not None
    return micros(t)


def event_now(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    at: str,
    state: str,
    reason: str | None,
    detail: str | None,
    *,
    first: bool = False,
    then: tuple[str, str | None, str | None] | None = None,
) -> None:
    """One event of a message's state history (in the database thread, inside the caller's
    transaction), after its others. ``row``: the message's row as the caller just wrote it;
    ``first``: the row is new; ``then``: a second event at the same time, after it (state,
    reason, detail), written with it."""
    created, when = created_us(row), micros(datetime.fromisoformat(at))
    event = pack_event(created, when, STATE_CODES[state], reason, detail)
    if then is not None:
        event += pack_event(created, when, STATE_CODES[then[0]], then[1], then[2])
    if first or not conn.execute(_HISTORY_ADD, (event, row["ref"])).rowcount:
        conn.execute(_HISTORY_NEW, (row["ref"], event))


# A receipt's state as SQLite stores it since schema 22: a small code where the word took up
# to 11 bytes (0 and 1, the delivered and undelivered most receipts say, take none).
RECEIPT_STATE_CODES = {"delivered": 0, "undelivered": 1, "expired": 2, "rejected": 3,
                       "accepted": 4, "unknown": 5}
RECEIPT_STATE_NAMES = {code: name for name, code in RECEIPT_STATE_CODES.items()}


def receipt_state_sql(col: str) -> str:
    """SQL reading a stored receipt state code back as its word."""
    whens = " ".join(f"WHEN {c} THEN '{n}'" for n, c in RECEIPT_STATE_CODES.items())
    return f"CASE {col} {whens} END"
