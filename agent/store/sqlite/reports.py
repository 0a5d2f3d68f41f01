"""Report, SMS-log and export reads: aggregation in SQL on a read-only connection in its own thread.

Nothing here runs on the event loop: ``ReportReader.call`` hands a function and a private,
read-only sqlite3 connection to one worker thread (sqlite releases the GIL while it works), so a
year-long report never stalls the loop that reads AMI. The figures are sums over the daily
rollups (agent.store.rollups) plus GROUP BYs over any partial day; the pure core in
agent.reports.figures turns the tallies into a Report.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar
from zoneinfo import ZoneInfo

from agent.errors import StoreError
from agent.store.base import (
    DayTally,
    LinkTally,
    MessageFilter,
    Percentile,
    ReplyTally,
    ReportData,
    Tally,
)
from agent.sms.numbers import mask, mask_text
from agent.store.rollups import bucket_sql, delivery_seconds_sql
from agent.store.sqlite.rows import _dt, ts

T = TypeVar("T")
SENTIMENT_CUT = 0.05  # VADER's own cut-off for its compound score (agent.reports.figures)


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


class _HasPath(Protocol):
    path: Path


class ReportReader:
    """A read-only connection to the store's SQLite file, used from one worker thread.
    ``async with ReportReader(path)``; ``await reader.call(fn, *args)`` runs ``fn(conn, *args)``
    there."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def open(self) -> Self:
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such database")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="aftercall-reports")
        try:
            self._conn = await self._in_thread(self._connect)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise
        return self

    def _connect(self) -> sqlite3.Connection:
        _background_priority()
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 5000")
            return conn
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open for reading: {exc}") from exc

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._in_thread(conn.close)
        self._pool.shutdown(wait=True)
        self._pool = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in the reader's thread; sqlite errors become StoreError."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.path}: report reader is not open")

        def run() -> T:
            try:
                return fn(conn, *args)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: report query failed: {exc}") from exc

        return await self._in_thread(run)

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the reader's thread: CPU work (encoding a page as JSON) that the
        event loop must not do."""
        if self._pool is None:
            raise StoreError(f"{self.path}: report reader is not open")
        return await self._in_thread(fn, *args)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.call(lambda c: c.execute(sql, params).fetchall())

    # -- the ReportSource seam (agent.store.base): what reports, the API and exports read ----

    async def report_data(self, f: MessageFilter, timezone: str = "UTC") -> ReportData:
        return await self.call(report_data, f, timezone)

    async def log_page(self, f: MessageFilter, *, unmasked: bool = False,
                       timezone: str | None = None) -> list[dict[str, Any]]:
        return await self.call(lambda c: [log_row(r, unmasked, timezone)
                                          for r in log_page(c, f)])

    async def log_count(self, f: MessageFilter, cap: int) -> tuple[int, bool]:
        return await self.call(log_count, f, cap)

    async def pbx_names(self) -> list[str]:
        return [r[0] for r in await self.rows(PBX_NAMES_SQL)]

    async def log_batches(self, f: MessageFilter, size: int, *, unmasked: bool = True,
                          timezone: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """The whole log for ``f``, ``size`` rows at a time (read and shaped in the thread)."""
        cursor = await self.call(lambda c: log_batches(c, f, size))
        while batch := await self.call(
                lambda _c: [log_row(r, unmasked, timezone) for r in next(cursor, [])]):
            yield batch


def _background_priority() -> None:
    """Lower this (the reader's) thread's CPU priority: on a small machine shared with Asterisk,
    a report may take longer, the loop that reads AMI must not wait for a core. Linux schedules
    threads on their own, so this touches no other thread; elsewhere it is a no-op."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REPORT_NICE)
    except (AttributeError, OSError):
        pass


REPORT_NICE = 10


# -- filters ---------------------------------------------------------------------------------------


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


# -- the report ------------------------------------------------------------------------------------
#
# Whole UTC days come from the rollups (agent.store.rollups: a few dozen rows per day, whatever
# the traffic); the part of a range that cuts a day in two is read from the messages themselves
# with the same GROUP BYs and the same histogram buckets, so both halves add up.


def _day_span(f: MessageFilter) -> tuple[str | None, str | None, list[tuple[datetime | None,
                                                                              datetime | None]]]:
    """Whole days [first, end) for the rollups, and the partial-day windows read raw."""
    since, until = f.since, f.until
    first = None if since is None else _ceil_day(since)
    end = None if until is None else _floor_day(until)
    if first is not None and end is not None and first >= end:
        return first.date().isoformat(), first.date().isoformat(), [(since, until)]
    edges: list[tuple[datetime | None, datetime | None]] = []
    if since is not None and first is not None and since < first:
        edges.append((since, first))
    if until is not None and end is not None and end < until:
        edges.append((end, until))
    return (None if first is None else first.date().isoformat(),
            None if end is None else end.date().isoformat(), edges)


def _floor_day(dt: datetime) -> datetime:
    dt = dt.astimezone(UTC)
    return datetime.combine(dt.date(), time.min, UTC)


def _ceil_day(dt: datetime) -> datetime:
    floor = _floor_day(dt)
    return floor if floor == dt else floor + timedelta(days=1)


def _rollup_where(f: MessageFilter, first: str | None, end: str | None) -> tuple[str, list[Any]]:
    parts, params = [], []
    if first is not None:
        parts.append("day >= ?")
        params.append(first)
    if end is not None:
        parts.append("day < ?")
        params.append(end)
    for column, value in (("rule", f.rule), ("gateway", f.gateway)):
        if value is not None:
            parts.append(f"{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _raw(conn: sqlite3.Connection, f: MessageFilter) -> tuple[list[Tally], list[LinkTally],
                                                              list[ReplyTally], list[Any]]:
    """The same tallies as the rollups hold, from the messages in ``f`` (a partial day)."""
    w, p = where(f)
    tallies = [Tally(r[0], r[1], r[2], r[3] or None, r[4] or None, r[5], r[6], r[7])
               for r in conn.execute(
        "SELECT m.rule, m.gateway, m.state, m.reason, m.error_code, count(*),"
        " count(m.submitted_at),"
        " coalesce(sum(CASE WHEN m.submitted_at IS NOT NULL THEN m.segments END), 0)"
        f" FROM messages m{w} GROUP BY 1, 2, 3, 4, 5", p)]
    links = [LinkTally(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in conn.execute(
        "SELECT rule, gateway, state = 'delivered', count(*), sum(k > 0), sum(k) FROM ("
        " SELECT m.rule, m.gateway, m.state, (SELECT count(*) FROM clicks c JOIN links l"
        "  ON l.code = c.code WHERE l.message_id = m.id) AS k FROM messages m"
        f"{_and(w, 'EXISTS (SELECT 1 FROM links l WHERE l.message_id = m.id)')})"
        " GROUP BY 1, 2, 3", p)]
    replies = [ReplyTally(*r) for r in conn.execute(
        "SELECT m.rule, m.gateway, CASE WHEN p.keyword IS NOT NULL THEN 'keyword'"
        f" WHEN p.sentiment IS NULL THEN 'unrated' WHEN p.sentiment >= {SENTIMENT_CUT!r}"
        f" THEN 'positive' WHEN p.sentiment <= {-SENTIMENT_CUT!r} THEN 'negative'"
        " ELSE 'neutral' END, count(*), coalesce(sum(p.rating), 0), count(p.rating),"
        " count(DISTINCT CASE WHEN p.action = 'opt_out' THEN m.id END)"
        f" FROM replies p JOIN messages m ON m.id = p.message_id{w} GROUP BY 1, 2, 3", p)]
    dlv = delivery_seconds_sql("m")
    hist = conn.execute(
        f"SELECT m.rule, m.gateway, 'h2s', {bucket_sql('m.hangup_to_submit_ms')},"
        f" count(*), sum(m.hangup_to_submit_ms) FROM messages m"
        f"{_and(w, 'm.submitted_at IS NOT NULL AND m.hangup_to_submit_ms IS NOT NULL')}"
        " GROUP BY 1, 2, 3, 4 UNION ALL"
        f" SELECT m.rule, m.gateway, 'delivery', {bucket_sql(dlv)}, count(*), sum({dlv})"
        " FROM messages m"
        f"{_and(w, _DELIVERED)} GROUP BY 1, 2, 3, 4", [*p, *p]).fetchall()
    return tallies, links, replies, hist


_DELIVERED = ("m.state = 'delivered' AND m.final_at IS NOT NULL"
              " AND m.submitted_at IS NOT NULL")


def _and(w: str, cond: str) -> str:
    return f"{w} AND {cond}" if w else f" WHERE {cond}"


def report_data(conn: sqlite3.Connection, f: MessageFilter, timezone: str = "UTC") -> ReportData:
    """Every tally the report needs for the messages matching ``f`` (only its time range, rule,
    gateway and PBX count; limit and offset are ignored), days in ``timezone``. The rollups
    have no PBX: a report for one PBX reads its rows (a shared database is PostgreSQL's case)."""
    f = MessageFilter(rule=f.rule, gateway=f.gateway, pbx=f.pbx, since=f.since, until=f.until,
                      limit=None)
    tallies: list[Tally] = []
    links: list[LinkTally] = []
    replies: list[ReplyTally] = []
    hist: list[Any] = []
    if f.pbx is not None:
        first = end = ""
        edges: list[tuple[datetime | None, datetime | None]] = [(f.since, f.until)]
    else:
        first, end, edges = _day_span(f)  # type: ignore[assignment]
    if f.pbx is None and (first is None or end is None or first < end):
        w, p = _rollup_where(f, first, end)
        for r in conn.execute(
                "SELECT rule, gateway, state, reason, error_code, sum(n), sum(sent),"
                f" sum(segments), sum(linked), sum(clicked), sum(clicks) FROM report_daily{w}"
                " GROUP BY 1, 2, 3, 4, 5", p):
            tallies.append(Tally(r[0], r[1], r[2], r[3] or None, r[4] or None, r[5], r[6], r[7]))
            if r[8]:
                links.append(LinkTally(r[0], r[1], r[2] == "delivered", r[8], r[9], r[10]))
        replies += [ReplyTally(*r) for r in conn.execute(
            "SELECT rule, gateway, label, sum(n), sum(rating_sum), sum(ratings), sum(opt_outs)"
            f" FROM report_replies{w} GROUP BY 1, 2, 3", p)]
        hist += conn.execute(
            "SELECT rule, gateway, metric, bucket, sum(n), sum(total) FROM report_hist"
            f"{w} GROUP BY 1, 2, 3, 4", p).fetchall()
    for since, until in edges:
        t, lk, rp, h = _raw(conn, MessageFilter(rule=f.rule, gateway=f.gateway, pbx=f.pbx,
                                                since=since, until=until, limit=None))
        tallies += t
        links += lk
        replies += rp
        hist += h
    days = _local_days(conn, f, ZoneInfo(timezone))
    return ReportData(tuple(t for t in tallies if t.count), tuple(d for d in days if d.count),
                      tuple(links), tuple(replies), tuple(_percentiles(hist)))


# -- days in the operator's time zone --------------------------------------------------------------

_QUARTER = timedelta(minutes=15)


def _slot_floor(dt: datetime) -> datetime:
    dt = dt.astimezone(UTC)
    return dt.replace(minute=dt.minute // 15 * 15, second=0, microsecond=0)


def _slot_text(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _offset_minutes(zone: ZoneInfo, at: datetime) -> int:
    off = at.astimezone(zone).utcoffset()
    return int(off.total_seconds() // 60) if off is not None else 0


def _offset_spans(zone: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime, datetime,
                                                                             int]]:
    """[lo, hi) cut where the zone's UTC offset changes (DST), each part with its offset."""
    out = []
    start, off = lo, _offset_minutes(zone, lo)
    t = lo
    while t < hi:
        nxt = min(t + timedelta(days=1), hi)
        if nxt < hi and _offset_minutes(zone, nxt) != off or nxt >= hi and \
                _offset_minutes(zone, hi - timedelta(microseconds=1)) != off:
            a, b = t, nxt  # the change lies in (a, b]: find it to the quarter hour
            while b - a > _QUARTER:
                mid = _slot_floor(a + (b - a) / 2)
                if mid <= a:
                    break
                a, b = (mid, b) if _offset_minutes(zone, mid) == off else (a, mid)
            out.append((start, b, off))
            start, off = b, _offset_minutes(zone, b)
            t = b
            continue
        t = nxt
    out.append((start, hi, off))
    return [(a, b, m) for a, b, m in out if a < b]


def _local_days(conn: sqlite3.Connection, f: MessageFilter, zone: ZoneInfo) -> list[DayTally]:
    """Messages per day in ``zone`` and state: whole quarter hours from ``report_slots``, the
    cut quarter hours at the ends (and everything, for one PBX) from the rows."""
    lo, hi = f.since, f.until
    if lo is None or hi is None:
        first, last = conn.execute(
            "SELECT min(a), max(b) FROM (SELECT min(slot) AS a, max(slot) AS b FROM report_slots"
            " UNION ALL SELECT substr(min(created_at), 1, 16), substr(max(created_at), 1, 16)"
            " FROM messages)").fetchone()
        if first is None:
            return []
        lo = lo or datetime.fromisoformat(first + ":00+00:00")
        hi = hi or datetime.fromisoformat(last + ":00+00:00") + _QUARTER
    if lo >= hi:
        return []
    raw_only = f.pbx is not None or f.rule is not None or f.gateway is not None
    inner_lo = lo if _slot_floor(lo) == lo else _slot_floor(lo) + _QUARTER
    inner_hi = _slot_floor(hi)
    counts: dict[tuple[str, str], list[int]] = {}

    def add(rows: Any) -> None:
        for day, state, n, sent in rows:
            c = counts.setdefault((day, state), [0, 0])
            c[0] += n
            c[1] += sent

    for a, b, off in _offset_spans(zone, lo, hi):
        shift = f"{off:+d} minutes"
        parts = [(a, b)] if raw_only or inner_lo >= inner_hi else [
            (a, min(b, inner_lo)), (max(a, inner_hi), b)]
        if not raw_only and inner_lo < inner_hi and max(a, inner_lo) < min(b, inner_hi):
            add(conn.execute(
                "SELECT substr(datetime(slot || ':00', ?), 1, 10), state, sum(n), sum(sent)"
                " FROM report_slots WHERE slot >= ? AND slot < ? GROUP BY 1, 2",
                (shift, _slot_text(max(a, inner_lo)), _slot_text(min(b, inner_hi)))))
        for x, y in parts:
            if x >= y:
                continue
            w, p = where(MessageFilter(rule=f.rule, gateway=f.gateway, pbx=f.pbx, since=x,
                                       until=y, limit=None))
            add(conn.execute(
                "SELECT substr(datetime(substr(m.created_at, 1, 19), ?), 1, 10), m.state,"
                f" count(*), count(m.submitted_at) FROM messages m{w} GROUP BY 1, 2",
                [shift, *p]))
    return [DayTally(date.fromisoformat(day), state, n, sent)
            for (day, state), (n, sent) in sorted(counts.items())]


_QS = {"h2s": (50, 99), "delivery": (50, 95)}


def _percentiles(hist: list[Any]) -> list[Percentile]:
    """Nearest-rank percentiles per scope from histogram rows (rule, gateway, metric, bucket,
    n, total): the bucket holding the k-th value, as the mean of that bucket's values."""
    scopes: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for rule, gateway, metric, bucket, n, total in hist:
        if n <= 0:
            continue
        for scope, key in (("all", ""), ("rule", rule), ("gateway", gateway)):
            b = scopes.setdefault((scope, key, metric), {}).setdefault(bucket, [0, 0.0])
            b[0] += n
            b[1] += total
    out = []
    for (scope, key, metric), buckets in scopes.items():
        n = sum(int(c) for c, _ in buckets.values())
        for q in _QS[metric]:
            k, seen = max(1, -(-q * n // 100)), 0
            for bucket in sorted(buckets):
                count, total = buckets[bucket]
                seen += int(count)
                if seen >= k:
                    out.append(Percentile(scope, key, metric, q, round(total / count, 6)))
                    break
    return out


# -- the SMS log -----------------------------------------------------------------------------------

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
