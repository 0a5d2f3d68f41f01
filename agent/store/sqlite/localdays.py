"""Report days over SQLite: messages per day in the operator's time zone, from quarter-hour slots
cut where the zone's UTC offset changes (the spans: agent.store.reportmath)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.store.base import DayTally, MessageFilter
from agent.store.reportmath import QUARTER, offset_spans, slot_floor
from agent.store.smslog import where
from agent.store.sqlite.smslog import micros_times, stamp


def _slot_text(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _local_days(conn: sqlite3.Connection, f: MessageFilter, zone: ZoneInfo) -> list[DayTally]:
    """Messages per day in ``zone`` and state: whole quarter hours from ``report_slots``, the
    cut quarter hours at the ends (and everything, for one PBX) from the rows."""
    lo, hi = f.since, f.until
    # A message's times are integers since schema 19 (the read-only reader may be given an
    # older file): the minute and the local day of one, as from the text.
    as_int = micros_times(conn)
    minute = ("strftime('%Y-%m-%dT%H:%M', {} / 1000000, 'unixepoch')" if as_int
              else "substr({}, 1, 16)")
    local_day = ("date(m.created_at / 1000000, 'unixepoch', ?)" if as_int
                 else "substr(datetime(substr(m.created_at, 1, 19), ?), 1, 10)")
    if lo is None or hi is None:
        first, last = conn.execute(
            "SELECT min(a), max(b) FROM (SELECT min(slot) AS a, max(slot) AS b FROM report_slots"
            f" UNION ALL SELECT {minute.format('min(created_at)')},"
            f" {minute.format('max(created_at)')} FROM messages)").fetchone()
        if first is None:
            return []
        lo = lo or datetime.fromisoformat(first + ":00+00:00")
        hi = hi or datetime.fromisoformat(last + ":00+00:00") + QUARTER
    if lo >= hi:
        return []
    raw_only = f.pbx is not None or f.rule is not None or f.gateway is not None
    inner_lo = lo if slot_floor(lo) == lo else slot_floor(lo) + QUARTER
    inner_hi = slot_floor(hi)
    counts: dict[tuple[str, str], list[int]] = {}

    def add(rows: Any) -> None:
        for day, state, n, sent in rows:
            c = counts.setdefault((day, state), [0, 0])
            c[0] += n
            c[1] += sent

    for a, b, off in offset_spans(zone, lo, hi):
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
                                       until=y, limit=None), stamp=stamp(conn))
            add(conn.execute(
                f"SELECT {local_day}, m.state,"
                f" count(*), count(m.submitted_at) FROM messages m{w} GROUP BY 1, 2",
                [shift, *p]))
    return [DayTally(date.fromisoformat(day), state, n, sent)
            for (day, state), (n, sent) in sorted(counts.items())]
