"""Reports for a store that is a database server (PostgreSQL): the same ReportSource seam.

The store runs the SQLite-flavoured log SQL through its own pool (``report_rows``: ``?``
placeholders, times as fixed-width UTC text). The report's tallies come from the store's own
daily rollups (``rollup_report``: agent.store.postgres.reports), per PBX. ``data_from_rows``
makes the same tallies from one row per message, exact (the rollups' tests compare with it).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo

from agent.store.base import (
    DayTally,
    LinkTally,
    MessageFilter,
    Percentile,
    ReplyTally,
    ReportData,
    Tally,
)
from agent.store.packing import from_micros
from agent.store.reportmath import PERCENTILES, SENTIMENT_CUT
from agent.store.smslog import LINK_BY_ID, PBX_NAMES_SQL, log_row, log_sql, where

T = TypeVar("T")

def fact_sql(link_of: str = LINK_BY_ID) -> str:
    """One row per message with its links' facts, a link ``l`` naming its message ``m`` as
    ``link_of`` says (smslog.LINK_BY_REF: SQLite's since its schema 24)."""
    return f"""
SELECT m.id, m.rule, m.gateway, m.state, m.reason, m.error_code, m.segments, m.created_at,
       m.submitted_at, m.final_at, m.hangup_to_submit_ms,
       EXISTS (SELECT 1 FROM links l WHERE {link_of}) AS has_link,
       (SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code WHERE {link_of})
           AS clicks
FROM messages m"""


_FACT_SQL = fact_sql()

_REPLY_SQL = """
SELECT m.rule, m.gateway, p.message_id, p.keyword, p.action, p.sentiment, p.rating
FROM replies p JOIN messages m ON m.id = p.message_id"""


class ServerReportSource:
    """``async with ServerReportSource(store)``: reports over ``store.report_rows``."""

    def __init__(self, store: Any) -> None:
        self.path = Path(str(getattr(store, "where", "store")))
        self._store = store

    async def open(self) -> Self:
        return self

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._store.report_rows(sql, params))

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def report_data(self, f: MessageFilter, timezone: str = "UTC") -> ReportData:
        return await self._store.rollup_report(f, timezone)  # type: ignore[no-any-return]

    async def exact_report_data(self, f: MessageFilter, timezone: str = "UTC") -> ReportData:
        """The same tallies from one row per message, percentiles exact: what the rollups
        must agree with (tests), read whole into this process (slow for a year)."""
        f = MessageFilter(rule=f.rule, gateway=f.gateway, pbx=f.pbx, since=f.since,
                          until=f.until, limit=None)
        w, p = where(f)
        facts = await self.rows(f"{_FACT_SQL}{w}", p)
        replies = await self.rows(f"{_REPLY_SQL}{w}", p)
        return await self.offload(data_from_rows, facts, replies, timezone)

    async def log_page(self, f: MessageFilter, *, unmasked: bool = False,
                       timezone: str | None = None) -> list[dict[str, Any]]:
        sql, p = log_sql(f)
        rows = await self.rows(sql, p)
        return await self.offload(lambda: [log_row(r, unmasked, timezone) for r in rows])

    async def log_count(self, f: MessageFilter, cap: int) -> tuple[int, bool]:
        w, p = where(f)
        rows = await self.rows(f"SELECT count(*) AS n FROM (SELECT 1 FROM messages m{w}"
                               " LIMIT ?) t", [*p, cap + 1])
        n = int(rows[0]["n"])
        return min(n, cap), n > cap

    async def pbx_names(self) -> list[str]:
        return [r["name"] for r in await self.rows(PBX_NAMES_SQL)]

    async def log_batches(self, f: MessageFilter, size: int, *, unmasked: bool = True,
                          timezone: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        offset = f.offset
        while True:
            page = await self.log_page(replace(f, limit=size, offset=offset), unmasked=unmasked,
                                       timezone=timezone)
            if not page:
                return
            yield page
            offset += len(page)


def _dt(v: Any) -> datetime | None:
    """A time as a row gives it: text, a datetime, or (SQLite's since its schema 19) integer
    microseconds."""
    if isinstance(v, int):
        return from_micros(v)
    return None if v is None else datetime.fromisoformat(v) if isinstance(v, str) else v


def _label(r: Any) -> str:
    if r["keyword"]:
        return "keyword"
    s = r["sentiment"]
    if s is None:
        return "unrated"
    return "positive" if s >= SENTIMENT_CUT else "negative" if s <= -SENTIMENT_CUT else "neutral"


def data_from_rows(facts: Sequence[Any], replies: Sequence[Any], timezone: str) -> ReportData:
    """The report's tallies from one row per message (pure)."""
    zone = ZoneInfo(timezone)
    tallies: Counter[tuple[Any, ...]] = Counter()
    sent: Counter[tuple[Any, ...]] = Counter()
    segs: Counter[tuple[Any, ...]] = Counter()
    days: Counter[tuple[Any, ...]] = Counter()
    days_sent: Counter[tuple[Any, ...]] = Counter()
    links: dict[tuple[Any, ...], list[int]] = {}
    values: dict[tuple[str, str, str], list[float]] = {}
    for r in facts:
        key = (r["rule"], r["gateway"], r["state"], r["reason"], r["error_code"])
        submitted, final = _dt(r["submitted_at"]), _dt(r["final_at"])
        tallies[key] += 1
        day = (_dt(r["created_at"]).astimezone(zone).date(), r["state"])  # type: ignore[union-attr]
        days[day] += 1
        if submitted is not None:
            sent[key] += 1
            segs[key] += int(r["segments"])
            days_sent[day] += 1
            if r["hangup_to_submit_ms"] is not None:
                for scope in (("all", ""), ("rule", r["rule"]), ("gateway", r["gateway"])):
                    values.setdefault((*scope, "h2s"), []).append(float(r["hangup_to_submit_ms"]))
        if r["state"] == "delivered" and submitted is not None and final is not None:
            secs = (final - submitted).total_seconds()
            for scope in (("all", ""), ("rule", r["rule"]), ("gateway", r["gateway"])):
                values.setdefault((*scope, "delivery"), []).append(secs)
        if r["has_link"]:
            lk = links.setdefault((r["rule"], r["gateway"], r["state"] == "delivered"), [0, 0, 0])
            lk[0] += 1
            lk[1] += int(r["clicks"]) > 0
            lk[2] += int(r["clicks"])
    reps: dict[tuple[Any, ...], list[int]] = {}
    opted: set[Any] = set()
    for r in replies:
        rp = reps.setdefault((r["rule"], r["gateway"], _label(r)), [0, 0, 0, 0])
        rp[0] += 1
        if r["rating"] is not None:
            rp[1] += int(r["rating"])
            rp[2] += 1
        if r["action"] == "opt_out" and r["message_id"] not in opted:
            opted.add(r["message_id"])
            rp[3] += 1
    pct = []
    for (scope, key, metric), xs in values.items():
        xs.sort()
        for q in PERCENTILES[metric]:
            pct.append(Percentile(scope, key, metric, q,
                                  xs[max(1, math.ceil(q / 100 * len(xs))) - 1]))
    return ReportData(
        tuple(Tally(*k, n, sent[k], segs[k]) for k, n in tallies.items()),
        tuple(DayTally(d, s, n, days_sent[(d, s)]) for (d, s), n in sorted(days.items())),
        tuple(LinkTally(*k, *v) for k, v in links.items()),
        tuple(ReplyTally(*k, *v) for k, v in reps.items()),
        tuple(pct))
