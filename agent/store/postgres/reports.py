"""Reports on PostgreSQL: whole UTC days from the rollups (agent.store.postgres.rollups), the
part of a range that cuts a day in two from the messages, with the same groups and buckets.

The same shape as the SQLite reader (agent.store.sqlite.reports), with the same arithmetic (day
spans, DST-aware offsets, percentiles from histograms: agent.store.reportmath); every read of one report runs in one
read-only REPEATABLE READ transaction, so its figures come from one snapshot.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from agent.errors import StoreError
from agent.store.base import DayTally, LinkTally, MessageFilter, ReplyTally, ReportData, Tally
from agent.store.postgres.pool import _ENVIRONMENTAL, PgPool, _reason, utc
from agent.store.postgres.rollups import FOLD, FOLD_EVERY_S, FOLD_LOCK_SQL, bucket
from agent.store.reportmath import (
    QUARTER,
    SENTIMENT_CUT,
    day_span,
    offset_spans,
    percentiles,
    slot_floor,
)

log = structlog.get_logger(__name__)

_LABEL = ("CASE WHEN p.keyword IS NOT NULL THEN 'keyword' WHEN p.sentiment IS NULL"
          f" THEN 'unrated' WHEN p.sentiment >= {SENTIMENT_CUT!r} THEN 'positive'"
          f" WHEN p.sentiment <= {-SENTIMENT_CUT!r} THEN 'negative' ELSE 'neutral' END")
_DELIVERY = "extract(epoch FROM m.final_at - m.submitted_at)::double precision"


class _Where:
    """A WHERE clause with PostgreSQL's numbered parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *values: Any) -> _Where:
        for v in values:
            self.args.append(v)
            sql = sql.replace("?", f"${len(self.args)}", 1)
        self.parts.append(sql)
        return self

    def sql(self, *more: str) -> str:
        parts = [*self.parts, *more]
        return (" WHERE " + " AND ".join(parts)) if parts else ""


def _messages(f: MessageFilter, since: datetime | None, until: datetime | None) -> _Where:
    w = _Where()
    for column, value in (("rule", f.rule), ("gateway", f.gateway), ("pbx", f.pbx)):
        if value is not None:
            w.add(f"m.{column} = ?", value)
    if since is not None:
        w.add("m.created_at >= ?", utc(since))
    if until is not None:
        w.add("m.created_at < ?", utc(until))
    return w


def _rollups(f: MessageFilter, first: str | None, end: str | None) -> _Where:
    w = _Where()
    if first is not None:
        w.add("day >= ?", date.fromisoformat(first))
    if end is not None:
        w.add("day < ?", date.fromisoformat(end))
    for column, value in (("rule", f.rule), ("gateway", f.gateway), ("pbx", f.pbx)):
        if value is not None:
            w.add(f"{column} = ?", value)
    return w


def _tally(r: Any) -> Tally:
    return Tally(r[0], r[1], r[2], r[3] or None, r[4] or None, int(r[5]), int(r[6]), int(r[7]))


async def _raw(conn: asyncpg.Connection, f: MessageFilter, since: datetime | None,
               until: datetime | None) -> tuple[list[Tally], list[LinkTally], list[ReplyTally],
                                                 list[Any]]:
    """The same tallies as the rollups hold, from the messages of a partial day."""
    w = _messages(f, since, until)
    tallies = [_tally(r) for r in await conn.fetch(
        "SELECT m.rule, m.gateway, m.state, m.reason, m.error_code, count(*),"
        " count(m.submitted_at),"
        " coalesce(sum(CASE WHEN m.submitted_at IS NOT NULL THEN m.segments END), 0)"
        f" FROM messages m{w.sql()} GROUP BY 1, 2, 3, 4, 5", *w.args)]
    links = [LinkTally(r[0], r[1], bool(r[2]), int(r[3]), int(r[4]), int(r[5]))
             for r in await conn.fetch(
        "SELECT rule, gateway, state = 'delivered', count(*), count(*) FILTER (WHERE k > 0),"
        " sum(k) FROM (SELECT m.rule, m.gateway, m.state, (SELECT count(*) FROM clicks c"
        " JOIN links l ON l.code = c.code WHERE l.message_id = m.id) AS k FROM messages m"
        f"{w.sql('EXISTS (SELECT 1 FROM links l WHERE l.message_id = m.id)')}) t"
        " GROUP BY 1, 2, 3", *w.args)]
    replies = [ReplyTally(r[0], r[1], r[2], *(int(x) for x in r[3:])) for r in await conn.fetch(
        f"SELECT m.rule, m.gateway, {_LABEL}, count(*), coalesce(sum(p.rating), 0),"
        " count(p.rating), count(DISTINCT CASE WHEN p.action = 'opt_out' THEN m.id END)"
        f" FROM replies p JOIN messages m ON m.id = p.message_id{w.sql()} GROUP BY 1, 2, 3",
        *w.args)]
    hist = [tuple(r) for r in await conn.fetch(
        f"SELECT m.rule, m.gateway, 'h2s', {bucket('m.hangup_to_submit_ms')}, count(*),"
        " sum(m.hangup_to_submit_ms) FROM messages m"
        f"{w.sql('m.submitted_at IS NOT NULL', 'm.hangup_to_submit_ms IS NOT NULL')}"
        " GROUP BY 1, 2, 3, 4 UNION ALL"
        f" SELECT m.rule, m.gateway, 'delivery', {bucket(_DELIVERY)}, count(*),"
        f" sum({_DELIVERY}) FROM messages m"
        f"{w.sql(*_DELIVERED)} GROUP BY 1, 2, 3, 4", *w.args)]
    return tallies, links, replies, hist


_DELIVERED = ("m.state = 'delivered'", "m.final_at IS NOT NULL", "m.submitted_at IS NOT NULL")


async def _local_days(conn: asyncpg.Connection, f: MessageFilter,
                      zone: ZoneInfo) -> list[DayTally]:
    """Messages per day in ``zone`` and state: whole quarter hours from the slots, the cut
    quarter hours at the ends (and everything, for one rule or gateway) from the rows."""
    lo, hi = f.since, f.until
    if lo is None or hi is None:
        first, last = await conn.fetchrow(
            "SELECT min(a), max(b) FROM (SELECT min(slot) AS a, max(slot) AS b"
            " FROM report_slots_all UNION ALL SELECT min(created_at), max(created_at)"
            " FROM messages) t")
        if first is None:
            return []
        lo = lo or slot_floor(first)
        hi = hi or slot_floor(last) + QUARTER
    if lo >= hi:
        return []
    raw_only = f.rule is not None or f.gateway is not None  # the slots have PBX, not rule
    inner_lo = lo if slot_floor(lo) == lo else slot_floor(lo) + QUARTER
    inner_hi = slot_floor(hi)
    counts: dict[tuple[str, str], list[int]] = {}
    for a, b, off in offset_spans(zone, lo, hi):
        rows: list[Any] = []
        parts = [(a, b)] if raw_only or inner_lo >= inner_hi else [
            (a, min(b, inner_lo)), (max(a, inner_hi), b)]
        if not raw_only and inner_lo < inner_hi and max(a, inner_lo) < min(b, inner_hi):
            w = _Where().add("slot >= ?", utc(max(a, inner_lo))).add("slot < ?",
                                                                     utc(min(b, inner_hi)))
            if f.pbx is not None:
                w.add("pbx = ?", f.pbx)
            rows += await conn.fetch(
                f"SELECT to_char((slot AT TIME ZONE 'UTC') + make_interval(mins => {off}),"
                " 'YYYY-MM-DD'), state, sum(n), sum(sent)"
                f" FROM report_slots_all{w.sql()} GROUP BY 1, 2", *w.args)
        for x, y in parts:
            if x < y:
                w = _messages(f, x, y)
                rows += await conn.fetch(
                    "SELECT to_char((m.created_at AT TIME ZONE 'UTC')"
                    f" + make_interval(mins => {off}), 'YYYY-MM-DD'), m.state, count(*),"
                    f" count(m.submitted_at) FROM messages m{w.sql()} GROUP BY 1, 2", *w.args)
        for day, state, n, sent in rows:
            c = counts.setdefault((day, state), [0, 0])
            c[0] += int(n)
            c[1] += int(sent)
    return [DayTally(date.fromisoformat(day), state, n, sent)
            for (day, state), (n, sent) in sorted(counts.items())]


class ReportOps(PgPool):
    """``rollup_report`` (what ServerReportSource reads) and ``fold_reports`` (the agent's)."""

    async def fold_reports(self) -> int:
        """Move the changes committed so far into the rollups; 0 when another agent is
        folding right now. Returns how many changes moved."""
        async with self._tx() as conn:
            if not await conn.fetchval(FOLD_LOCK_SQL):
                return 0
            return sum([int(await conn.fetchval(sql)) for sql in FOLD])

    async def keep_folding(self, every: float = FOLD_EVERY_S) -> None:
        """The running agent's task: fold every ``every`` seconds (each agent tries; one at a
        time does it). A failed fold is logged and tried again: the changes wait, readers
        still count them."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.fold_reports()
            except StoreError as e:
                log.warning("report_fold_failed", error=str(e), retry_in_s=every)

    async def rollup_report(self, f: MessageFilter, timezone: str = "UTC") -> ReportData:
        """Every tally the report needs for the messages matching ``f`` (its time range, rule,
        gateway and PBX), days in ``timezone``."""
        if self._closed or self._pool is None:
            raise StoreError(f"{self.where}: store is not open")
        f = MessageFilter(rule=f.rule, gateway=f.gateway, pbx=f.pbx, since=f.since,
                          until=f.until, limit=None)
        first, end, edges = day_span(f.since, f.until)
        try:
            return await self._rollup_report(f, first, end, edges, ZoneInfo(timezone))
        except (*_ENVIRONMENTAL, asyncpg.PostgresError) as exc:
            raise StoreError(f"{self.where}: report failed: {_reason(exc)}") from None

    async def _rollup_report(self, f: MessageFilter, first: str | None, end: str | None,
                             edges: list[tuple[datetime | None, datetime | None]],
                             zone: ZoneInfo) -> ReportData:
        assert self._pool is not None
        tallies: list[Tally] = []
        links: list[LinkTally] = []
        replies: list[ReplyTally] = []
        hist: list[Any] = []
        async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            if first is None or end is None or first < end:
                w = _rollups(f, first, end)
                for r in await conn.fetch(
                        "SELECT rule, gateway, state, reason, error_code, sum(n), sum(sent),"
                        " sum(segments), sum(linked), sum(clicked), sum(clicks)"
                        f" FROM report_daily_all{w.sql()} GROUP BY 1, 2, 3, 4, 5", *w.args):
                    tallies.append(_tally(r))
                    if r[8]:
                        links.append(LinkTally(r[0], r[1], r[2] == "delivered", int(r[8]),
                                               int(r[9]), int(r[10])))
                replies += [ReplyTally(r[0], r[1], r[2], *(int(x) for x in r[3:]))
                            for r in await conn.fetch(
                    "SELECT rule, gateway, label, sum(n), sum(rating_sum), sum(ratings),"
                    f" sum(opt_outs) FROM report_replies_all{w.sql()} GROUP BY 1, 2, 3",
                    *w.args)]
                hist += [(r[0], r[1], r[2], r[3], int(r[4]), float(r[5]))
                         for r in await conn.fetch(
                    "SELECT rule, gateway, metric, bucket, sum(n), sum(total)"
                    f" FROM report_hist_all{w.sql()} GROUP BY 1, 2, 3, 4", *w.args)]
            for since, until in edges:
                t, lk, rp, h = await _raw(conn, f, since, until)
                tallies += t
                links += lk
                replies += rp
                hist += h
            days = await _local_days(conn, f, zone)
        return ReportData(tuple(t for t in tallies if t.count), tuple(d for d in days if d.count),
                          tuple(links), tuple(replies), tuple(percentiles(hist)))
