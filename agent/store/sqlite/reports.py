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
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo

from agent.errors import StoreError
from agent.store.base import (
    LinkTally,
    MessageFilter,
    ReplyTally,
    ReportData,
    Tally,
)
from agent.store.reportmath import SENTIMENT_CUT, day_span, percentiles
from agent.store.rollups import MICROS, TEXT, bucket_sql
from agent.store.smslog import PBX_NAMES_SQL, log_row, where
from agent.store.sqlite.localdays import _local_days
from agent.store.sqlite.smslog import (
    link_of,
    log_batches,
    log_count,
    log_page,
    micros_times,
    stamp,
)

T = TypeVar("T")


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


# -- the report ------------------------------------------------------------------------------------
#
# Whole UTC days come from the rollups (agent.store.rollups: a few dozen rows per day, whatever
# the traffic); the part of a range that cuts a day in two is read from the messages themselves
# with the same GROUP BYs and the same histogram buckets, so both halves add up.


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
    w, p = where(f, stamp=stamp(conn))
    tallies = [Tally(r[0], r[1], r[2], r[3] or None, r[4] or None, r[5], r[6], r[7])
               for r in conn.execute(
        "SELECT m.rule, m.gateway, m.state, m.reason, m.error_code, count(*),"
        " count(m.submitted_at),"
        " coalesce(sum(CASE WHEN m.submitted_at IS NOT NULL THEN m.segments END), 0)"
        f" FROM messages m{w} GROUP BY 1, 2, 3, 4, 5", p)]
    lk = link_of(conn)
    links = [LinkTally(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in conn.execute(
        "SELECT rule, gateway, state = 'delivered', count(*), sum(k > 0), sum(k) FROM ("
        " SELECT m.rule, m.gateway, m.state, (SELECT count(*) FROM clicks c JOIN links l"
        f"  ON l.code = c.code WHERE {lk}) AS k FROM messages m"
        f"{_and(w, f'EXISTS (SELECT 1 FROM links l WHERE {lk})')})"
        " GROUP BY 1, 2, 3", p)]
    replies = [ReplyTally(*r) for r in conn.execute(
        "SELECT m.rule, m.gateway, CASE WHEN p.keyword IS NOT NULL THEN 'keyword'"
        f" WHEN p.sentiment IS NULL THEN 'unrated' WHEN p.sentiment >= {SENTIMENT_CUT!r}"
        f" THEN 'positive' WHEN p.sentiment <= {-SENTIMENT_CUT!r} THEN 'negative'"
        " ELSE 'neutral' END, count(*), coalesce(sum(p.rating), 0), count(p.rating),"
        " count(DISTINCT CASE WHEN p.action = 'opt_out' THEN m.id END)"
        f" FROM replies p JOIN messages m ON m.id = p.message_id{w} GROUP BY 1, 2, 3", p)]
    dlv = (MICROS if micros_times(conn) else TEXT).delivery("m")
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
        first, end, edges = day_span(f.since, f.until)  # type: ignore[assignment]
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
                      tuple(links), tuple(replies), tuple(percentiles(hist)))
