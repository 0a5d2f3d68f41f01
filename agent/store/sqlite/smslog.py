"""The SMS log over SQLite: a message filter as SQL, and log pages, counts and export batches
with each row's receipt, clicks and replies, as the export columns name them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.sms.numbers import mask, mask_text
from agent.store.base import MessageFilter
from agent.store.sqlite.rows import _dt, ts


def where(f: MessageFilter, alias: str = "m") -> tuple[str, list[Any]]:
    """The WHERE clause for ``f`` (each filter has an index that leads with it; see migration 2)."""
    parts: list[str] = []
    params: list[Any] = []
    if f.states:
        parts.append(f"{alias}.state IN ({','.join('?' * len(f.states))})")
        params.extend(str(s) for s in f.states)
    for column, value in (("rule", f.rule), ("call_id", f.call_id), ("number", f.number),
                          ("gateway", f.gateway), ("pbx", f.pbx)):
        if value is not None:
            parts.append(f"{alias}.{column} = ?")
            params.append(value)
    if f.since is not None:
        parts.append(f"{alias}.created_at >= ?")
        params.append(ts(f.since))
    if f.until is not None:
        parts.append(f"{alias}.created_at < ?")
        params.append(ts(f.until))
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


_LOG_SQL = """
SELECT m.*,
  (SELECT r.state FROM receipts r WHERE r.message_id = m.id ORDER BY r.id DESC LIMIT 1)
      AS receipt_state,
  (SELECT r.received_at FROM receipts r WHERE r.message_id = m.id ORDER BY r.id DESC LIMIT 1)
      AS receipt_at,
  (SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code WHERE l.message_id = m.id)
      AS clicks,
  (SELECT count(*) FROM replies p WHERE p.message_id = m.id) AS replies
FROM messages m"""


def _log_sql(f: MessageFilter) -> tuple[str, list[Any]]:
    w, p = where(f)
    order = "DESC" if f.newest_first else "ASC"
    return (f"{_LOG_SQL}{w} ORDER BY m.created_at {order}, m.id {order} LIMIT ? OFFSET ?",
            [*p, -1 if f.limit is None else f.limit, f.offset])


def log_page(conn: sqlite3.Connection, f: MessageFilter) -> list[sqlite3.Row]:
    """One page of the SMS log (``f.limit`` rows from ``f.offset``), newest first by default."""
    sql, p = _log_sql(f)
    return conn.execute(sql, p).fetchall()


def log_count(conn: sqlite3.Connection, f: MessageFilter, cap: int) -> tuple[int, bool]:
    """How many messages match ``f``, counting at most ``cap`` (True when the cap was hit), so a
    page header costs an index range, not a year."""
    w, p = where(f)
    n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM messages m{w} LIMIT ?) t",
                     [*p, cap + 1]).fetchone()[0]
    return min(n, cap), n > cap


def log_batches(conn: sqlite3.Connection, f: MessageFilter,
                size: int) -> Iterator[list[sqlite3.Row]]:
    """The whole log for ``f`` in batches of ``size`` rows, for streaming exports."""
    sql, p = _log_sql(f)
    cur = conn.execute(sql, p)
    while batch := cur.fetchmany(size):
        yield batch


def local_iso(value: str | datetime | None, timezone: str) -> str | None:
    """A stored UTC time as ISO 8601 in ``timezone``, with its offset (2024-05-01T14:30:00+05:30)."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return dt.astimezone(ZoneInfo(timezone)).isoformat(timespec="seconds")


def log_row(r: Any, unmasked: bool, timezone: str | None = None) -> dict[str, Any]:
    """One SMS-log row as the export columns (agent.reports) name them: no reason on a
    delivered message, the detail of a suppression or failure, numbers inside texts masked
    unless ``unmasked``, local times with a ``timezone``."""
    submitted, final = _dt(r["submitted_at"]), _dt(r["final_at"])
    delivery = (
        round((final - submitted).total_seconds(), 3)
        if submitted and final and r["state"] == "delivered" else None
    )
    number = r["number"]
    out = {
        "id": r["id"], "call_id": r["call_id"], "rule": r["rule"], "template": r["template"],
        "recipient_kind": r["recipient_kind"],
        "number": number if unmasked or not number else mask(number),
        "gateway": r["gateway"], "sender_id": r["sender_id"], "status": r["state"],
        "reason": r["reason"], "error_code": r["error_code"], "text": r["text"],
        "encoding": r["encoding"], "segments": r["segments"], "attempts": r["attempts"],
        "created_at": r["created_at"], "submitted_at": r["submitted_at"],
        "final_at": r["final_at"], "hangup_to_submit_ms": r["hangup_to_submit_ms"],
        "delivery_seconds": delivery, "receipt_state": r["receipt_state"],
        "receipt_at": r["receipt_at"], "clicks": r["clicks"], "replies": r["replies"],
    }
    delivered = out["status"] == "delivered"
    if delivered:
        out["reason"] = None
    # A text due later is stored as deferred (the outbox treats quiet hours and schedules
    # alike: both go when next_attempt_at comes); the log names a scheduled one for what it is.
    out["scheduled_for"] = r["next_attempt_at"] if r["state"] == "deferred" else None
    if out["status"] == "deferred" and (r["reason"] or "").startswith("scheduled"):
        out["status"] = "scheduled"
    detail = r["detail"]
    out["detail"] = None if delivered else detail
    if not unmasked:
        out["text"] = mask_text(out["text"]) if out["text"] else out["text"]
        out["detail"] = mask_text(out["detail"]) if out["detail"] else out["detail"]
    for k in ("created_at", "submitted_at", "final_at", "receipt_at", "scheduled_for"):
        out[f"{k}_local"] = local_iso(out[k], timezone) if timezone else None
    return out
