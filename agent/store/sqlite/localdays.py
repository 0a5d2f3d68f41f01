"""Report windows over SQLite: messages per day in the operator's time zone (quarter-hour slots
cut where the zone's UTC offset changes), and nearest-rank percentiles from histogram rows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent.store.base import DayTally, MessageFilter, Percentile
from agent.store.sqlite.smslog import where

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
