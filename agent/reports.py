"""Report and export queries over the store: the SMS log, its export, the rows behind the report.

Reads go through their own read-only SQLite connection to the store's file (WAL lets it read
while the agent writes), so a long report never queues behind the writer. The figures are
computed by ``compute_report`` (agent.report_figures), a pure function over plain rows, so they
are testable without a database; agent.report_render turns them into text. Both modules' names
are importable from here as well.

Export columns (``export_messages``, ``message_rows`` and ``GET /api/messages``), in order:

    id                    our message id (the outbox row)
    call_id               the call (Asterisk Linkedid) the message was decided for
    rule                  the rule that decided it
    template              the template rendered
    recipient_kind        caller | agent | fixed
    number                the recipient, E.164 (masked as +91******5678 unless unmasked)
    gateway               the gateway it was (or would have been) sent through
    sender_id             the sender id / long number
    status                queued, submitted, delivered, undelivered, expired, failed,
                          suppressed, deferred or ambiguous
    reason                why it is suppressed/failed/deferred (opt_out, dnd, cooldown, ...)
    error_code            the gateway's or SMSC's error code, if any
    text                  the text as sent (empty when rendering failed)
    encoding              GSM-7 or UCS-2
    segments              SMS segments (what is billed)
    attempts              submit attempts
    created_at            when the decision was recorded (UTC, ISO 8601)
    submitted_at          when the gateway accepted it
    final_at              when it reached a final state (delivered, failed ...)
    hangup_to_submit_ms   from the call's hangup to the gateway's accept, milliseconds
    delivery_seconds      from submit to the delivery receipt, seconds
    receipt_state         the latest delivery receipt's state
    receipt_at            when that receipt was received
    clicks                clicks on the message's tracked links
    replies               replies linked to the message
    detail                what the reason means for this message (the suppression or failure
                          detail, e.g. "agent 2009 has no mobile"); empty when delivered
    created_at_local, submitted_at_local, final_at_local, receipt_at_local
                          the same times in the operator's zone (rules.yaml defaults.timezone),
                          ISO 8601 with its offset; the UTC columns stay as they are

``reason`` is empty for a delivered message. Unless numbers are unmasked, numbers written
inside ``text`` and ``detail`` are masked like ``number``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol, Self
from zoneinfo import ZoneInfo

import aiosqlite

from agent.errors import StoreError
from agent.models import MessageState
from agent.report_figures import (
    SENTIMENT_THRESHOLD,
    DayPoint,
    FactRow,
    Figures,
    Report,
    compute_report,
    figures,
    percentile,
    sentiment_label,
)
from agent.report_render import (
    EXPORT_COLUMNS,
    Format,
    render_csv,
    render_json,
    render_messages,
    render_report,
    render_table,
)
from agent.sms.numbers import mask, mask_text
from agent.store.base import MessageFilter
from agent.store.sqlite.rows import _dt, ts

__all__ = [
    "EXPORT_COLUMNS", "SENTIMENT_THRESHOLD", "DayPoint", "FactRow", "Figures", "Format", "Report",
    "ReportReader", "build_report", "compute_report", "export_messages", "fact_rows", "figures",
    "local_iso", "message_rows", "parse_states", "parse_when", "percentile", "render_csv", "render_json", "render_messages", "render_report",
    "render_table", "sentiment_label",
]


class _HasPath(Protocol):
    path: Path


def parse_when(value: str, *, end: bool = False, timezone: str = "UTC") -> datetime:
    """An ISO date or date-time from a flag or query string, in ``timezone`` (the operator's)
    unless it says otherwise; a bare date as an end means the end of that day. ValueError
    names what was expected."""
    zone = ZoneInfo(timezone)
    try:
        if len(value) == 10:
            return datetime.combine(datetime.fromisoformat(value).date(),
                                    time.max if end else time.min, zone).astimezone(UTC)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expected an ISO date (2024-05-01) or date-time") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=zone)).astimezone(UTC)


def local_iso(value: str | datetime | None, timezone: str) -> str | None:
    """A stored UTC time as ISO 8601 in ``timezone``, with its offset (2024-05-01T14:30:00+05:30)."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return dt.astimezone(ZoneInfo(timezone)).isoformat(timespec="seconds")


def parse_states(value: str) -> list[MessageState]:
    """``delivered,failed`` -> states; ValueError lists the valid ones."""
    try:
        return [MessageState(s.strip()) for s in value.split(",") if s.strip()]
    except ValueError:
        choices = ", ".join(s.value for s in MessageState)
        raise ValueError(f"expected one or more of {choices}") from None


class ReportReader:
    """A read-only connection to the store's SQLite file. ``async with ReportReader(path)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None

    @classmethod
    def for_store(cls, store: _HasPath) -> ReportReader:
        if hasattr(store, "report_rows"):  # a database server (PostgreSQL) answers them itself
            return StoreReportReader(store)
        path = getattr(store, "path", None)
        if path is None:  # said plainly rather than failing on a missing attribute
            raise StoreError("reports and export read a SQLite file; this store is not one")
        return cls(path)

    async def open(self) -> Self:
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such database")
        try:
            self._conn = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
            self._conn.row_factory = sqlite3.Row
            await self._conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open for reading: {exc}") from exc
        return self

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._conn is None:
            raise StoreError(f"{self.path}: report reader is not open")
        try:
            async with self._conn.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: report query failed: {exc}") from exc


class StoreReportReader(ReportReader):
    """The report queries run by a store that is a database server (PostgreSQL, through its
    pool): the store takes the same SQL and gives rows back as the SQLite file would."""

    def __init__(self, store: Any) -> None:
        self.path = Path(str(getattr(store, "where", "store")))
        self._store = store

    async def open(self) -> Self:
        return self

    async def close(self) -> None:
        return None

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._store.report_rows(sql, params))


# -- the SMS log ---------------------------------------------------------------------------------


def _where(f: MessageFilter, alias: str = "m") -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if f.states:
        where.append(f"{alias}.state IN ({','.join('?' * len(f.states))})")
        params.extend(str(s) for s in f.states)
    for column, value in (("rule", f.rule), ("call_id", f.call_id), ("number", f.number),
                          ("gateway", f.gateway), ("pbx", f.pbx)):
        if value is not None:
            where.append(f"{alias}.{column} = ?")
            params.append(value)
    if f.since is not None:
        where.append(f"{alias}.created_at >= ?")
        params.append(ts(f.since))
    if f.until is not None:
        where.append(f"{alias}.created_at < ?")
        params.append(ts(f.until))
    return (" WHERE " + " AND ".join(where)) if where else "", params


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


async def message_rows(
    reader: ReportReader, filters: MessageFilter | None = None, *, unmasked: bool = False,
    timezone: str | None = None,
) -> list[dict[str, Any]]:
    """The SMS log: one dict per message with ``EXPORT_COLUMNS`` as keys (the ``*_local``
    columns only with a ``timezone``)."""
    f = filters or MessageFilter()
    where, params = _where(f)
    order = "DESC" if f.newest_first else "ASC"
    sql = f"{_LOG_SQL}{where} ORDER BY m.created_at {order}, m.id LIMIT ? OFFSET ?"
    rows = await reader.rows(sql, [*params, -1 if f.limit is None else f.limit, f.offset])
    return [_log_row(r, unmasked, timezone) for r in rows]


def _log_row(r: sqlite3.Row, unmasked: bool, timezone: str | None = None) -> dict[str, Any]:
    submitted, final = _dt(r["submitted_at"]), _dt(r["final_at"])
    delivery = (
        round((final - submitted).total_seconds(), 3)
        if submitted and final and r["state"] == MessageState.DELIVERED else None
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
    _presentable(out, r["detail"], unmasked, timezone)
    return out


def _presentable(out: dict[str, Any], detail: str | None, unmasked: bool,
                 timezone: str | None) -> None:
    """What a reader sees beyond the stored row: no reason on a delivered message, the detail
    of a suppression or failure, numbers inside texts masked, local times."""
    delivered = out["status"] == MessageState.DELIVERED
    if delivered:
        out["reason"] = None
    out["detail"] = None if delivered else detail
    if not unmasked:
        out["text"] = mask_text(out["text"]) if out["text"] else out["text"]
        out["detail"] = mask_text(out["detail"]) if out["detail"] else out["detail"]
    for k in ("created_at", "submitted_at", "final_at", "receipt_at"):
        out[f"{k}_local"] = local_iso(out[k], timezone) if timezone else None


async def export_messages(
    store: _HasPath | ReportReader, filters: MessageFilter | None,
    format: Literal["csv", "json"], *, unmasked: bool = True, timezone: str = "UTC",
) -> str:
    """Every message matching ``filters`` (no limit unless the filter sets one), one row each,
    columns as in the module docstring. Exports are for the operator, so numbers are unmasked
    by default."""
    f = filters or MessageFilter(limit=None, newest_first=False)
    if isinstance(store, ReportReader):
        rows = await message_rows(store, f, unmasked=unmasked, timezone=timezone)
    else:
        async with ReportReader.for_store(store) as reader:
            rows = await message_rows(reader, f, unmasked=unmasked, timezone=timezone)
    return render_messages(rows, format)


# -- the report ----------------------------------------------------------------------------------


_FACT_SQL = """
SELECT m.id, m.rule, m.gateway, m.state, m.reason, m.error_code, m.segments, m.created_at,
       m.submitted_at, m.final_at, m.hangup_to_submit_ms,
       EXISTS (SELECT 1 FROM links l WHERE l.message_id = m.id) AS has_link,
       (SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code WHERE l.message_id = m.id)
           AS clicks
FROM messages m"""


async def fact_rows(reader: ReportReader, filters: MessageFilter) -> list[FactRow]:
    where, params = _where(filters)
    rows = await reader.rows(f"{_FACT_SQL}{where} ORDER BY m.created_at", params)
    ids = [r["id"] for r in rows]
    replies: dict[str, list[sqlite3.Row]] = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        for p in await reader.rows(
            "SELECT message_id, keyword, action, sentiment, rating FROM replies"
            f" WHERE message_id IN ({','.join('?' * len(part))})", part,
        ):
            replies.setdefault(p["message_id"], []).append(p)
    out = []
    for r in rows:
        reps = replies.get(r["id"], [])
        out.append(FactRow(
            rule=r["rule"], gateway=r["gateway"], state=r["state"], reason=r["reason"],
            error_code=r["error_code"], segments=int(r["segments"]),
            created_at=datetime.fromisoformat(r["created_at"]),
            submitted_at=_dt(r["submitted_at"]), final_at=_dt(r["final_at"]),
            hangup_to_submit_ms=r["hangup_to_submit_ms"], has_link=bool(r["has_link"]),
            clicks=int(r["clicks"]),
            sentiments=tuple(("keyword" if p["keyword"] else sentiment_label(p["sentiment"]))
                             or "unrated" for p in reps),
            ratings=tuple(int(p["rating"]) for p in reps if p["rating"] is not None),
            opted_out=any(p["action"] == "opt_out" for p in reps),
        ))
    return out


async def build_report(
    store: _HasPath | ReportReader, *, since: datetime | None = None,
    until: datetime | None = None, rule: str | None = None, gateway: str | None = None,
    price_per_segment: Decimal | None = None, currency: str | None = None,
    timezone: str = "UTC", pbx: str | None = None,
) -> Report:
    """The report for messages created in [since, until), optionally one rule / gateway.
    ``store`` is a SqliteStore (its file is opened read-only) or an open ReportReader."""
    filters = MessageFilter(rule=rule, gateway=gateway, since=since, until=until, limit=None,
                            pbx=pbx)
    if isinstance(store, ReportReader):
        rows = await fact_rows(store, filters)
    else:
        async with ReportReader.for_store(store) as reader:
            rows = await fact_rows(reader, filters)
    return compute_report(rows, since=since, until=until, price_per_segment=price_per_segment,
                          currency=currency, timezone=timezone)

