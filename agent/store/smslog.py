"""The SMS log as both stores read it: a message filter as SQL (``?`` placeholders, times as
fixed-width UTC text, or as SQLite's integer microseconds since its schema 19; PostgreSQL's
``report_rows`` translates it), the log query, the PBX names, and each row shaped as the export
columns name it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.sms.numbers import mask, mask_text
from agent.store.base import MessageFilter
from agent.store.stamps import from_ts, ts

#: The WHERE of SQLite's index of states (schema 15): the states a year holds most of are left
#: out of it, and SQLite uses a partial index only for a query whose WHERE has this very term.
RARE_STATES = "state NOT IN ('delivered', 'suppressed')"
_COMMON_STATES = frozenset({"delivered", "suppressed"})


def rare_states_term(states: Collection[str], alias: str = "") -> str:
    """`` AND <RARE_STATES>`` when every state in ``states`` is in that index, else nothing
    (the term says nothing a ``state IN (...)`` of those states does not)."""
    if not states or any(s in _COMMON_STATES for s in states):
        return ""
    return f" AND {alias + '.' if alias else ''}{RARE_STATES}"


def where(f: MessageFilter, alias: str = "m",
          stamp: Callable[[datetime], Any] = ts) -> tuple[str, list[Any]]:
    """The WHERE clause for ``f`` (each filter has an index that leads with it; see migration 2),
    its times as ``stamp`` gives them (the stored form)."""
    parts: list[str] = []
    params: list[Any] = []
    if f.states:
        states = [str(s) for s in f.states]
        parts.append(f"{alias}.state IN ({','.join('?' * len(states))})"
                     + rare_states_term(states, alias))
        params.extend(states)
    for column, value in (("rule", f.rule), ("call_id", f.call_id), ("number", f.number),
                          ("gateway", f.gateway), ("pbx", f.pbx)):
        if value is not None:
            parts.append(f"{alias}.{column} = ?")
            params.append(value)
    if f.since is not None:
        parts.append(f"{alias}.created_at >= ?")
        params.append(stamp(f.since))
    if f.until is not None:
        parts.append(f"{alias}.created_at < ?")
        params.append(stamp(f.until))
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


#: How a link ``l`` names its message ``m``: by id (PostgreSQL; SQLite before its schema 24),
#: by ref (SQLite since).
LINK_BY_ID = "l.message_id = m.id"
LINK_BY_REF = "l.msg = m.ref"


# {columns}: the message's (SQLite's since its schema 19 name them, its times as the text);
# {receipt_of}: how a receipt names its message (SQLite's by ref since its schema 14);
# {received_at}: its time as the fixed-width text (SQLite's are integers since its schema 16);
# {receipt_state}: its state as the word (SQLite's is a code since its schema 22);
# {link_of}: how a link names its message (SQLite's by ref since its schema 24).
LOG_SQL = """
SELECT {columns},
  (SELECT {receipt_state} FROM receipts r WHERE {receipt_of} ORDER BY r.id DESC LIMIT 1)
      AS receipt_state,
  (SELECT {received_at} FROM receipts r WHERE {receipt_of} ORDER BY r.id DESC LIMIT 1)
      AS receipt_at,
  (SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code WHERE {link_of}) AS clicks,
  (SELECT count(*) FROM replies p WHERE p.message_id = m.id) AS replies
FROM messages m"""


def log_sql(f: MessageFilter, receipt_of: str = "r.message_id = m.id",
            received_at: str = "r.received_at", stamp: Callable[[datetime], Any] = ts,
            columns: str = "m.*", receipt_state: str = "r.state",
            link_of: str = LINK_BY_ID, id_of: str = "m.id") -> tuple[str, list[Any]]:
    """``id_of``: the message's id as text, which orders messages of one time (SQLite's is
    bytes since its schema 26: packing.id_sql)."""
    w, p = where(f, stamp=stamp)
    order = "DESC" if f.newest_first else "ASC"
    base = LOG_SQL.format(receipt_of=receipt_of, received_at=received_at, columns=columns,
                          receipt_state=receipt_state, link_of=link_of)
    return (f"{base}{w} ORDER BY m.created_at {order}, {id_of} {order} LIMIT ? OFFSET ?",
            [*p, -1 if f.limit is None else f.limit, f.offset])


#: The columns ``log_row`` reads of a message.
LOG_COLUMNS = ("id", "call_id", "pbx", "rule", "template", "recipient_kind", "number", "gateway",
               "sender_id", "state", "reason", "error_code", "text", "encoding", "segments",
               "attempts", "created_at", "submitted_at", "final_at", "hangup_to_submit_ms",
               "next_attempt_at", "detail")


#: Each PBX named on a message or a call, found by skipping along the (pbx, time) indexes: one
#: index seek per PBX, not a scan of a year of rows. Plain SQL that PostgreSQL runs as well.
PBX_NAMES_SQL = """
WITH RECURSIVE m(name) AS (
    SELECT min(pbx) FROM messages
    UNION ALL SELECT (SELECT min(x.pbx) FROM messages x WHERE x.pbx > m.name)
    FROM m WHERE m.name IS NOT NULL),
c(name) AS (
    SELECT min(pbx) FROM calls
    UNION ALL SELECT (SELECT min(x.pbx) FROM calls x WHERE x.pbx > c.name)
    FROM c WHERE c.name IS NOT NULL)
SELECT name FROM m WHERE name IS NOT NULL
UNION SELECT name FROM c WHERE name IS NOT NULL
ORDER BY name"""


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
    submitted, final = from_ts(r["submitted_at"]), from_ts(r["final_at"])
    delivery = (
        round((final - submitted).total_seconds(), 3)
        if submitted and final and r["state"] == "delivered" else None
    )
    number = r["number"]
    out = {
        "id": r["id"], "call_id": r["call_id"], "pbx": r["pbx"], "rule": r["rule"],
        "template": r["template"],
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
