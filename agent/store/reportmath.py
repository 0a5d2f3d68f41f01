"""The report's arithmetic that both stores share: which days the rollups answer and which edges
are read raw, quarter-hour slots cut where the operator's zone changes its UTC offset, and
nearest-rank percentiles from histogram rows. Pure: times in, spans and figures out; the SQL
that reads each span stays with its store."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent.store.base import Percentile

#: VADER's own cut-off for its compound score, as agent.reports.figures labels a reply.
SENTIMENT_CUT = 0.05
#: The slots ``report_slots`` counts messages in (the per-day chart in the operator's zone).
QUARTER = timedelta(minutes=15)
#: Which percentiles each latency histogram reports.
PERCENTILES: dict[str, tuple[int, ...]] = {"h2s": (50, 99), "delivery": (50, 95)}

Window = tuple[datetime | None, datetime | None]


def slot_floor(dt: datetime) -> datetime:
    """The start of the quarter hour (UTC) that holds ``dt``."""
    dt = dt.astimezone(UTC)
    return dt.replace(minute=dt.minute // 15 * 15, second=0, microsecond=0)


def _offset_minutes(zone: ZoneInfo, at: datetime) -> int:
    off = at.astimezone(zone).utcoffset()
    return int(off.total_seconds() // 60) if off is not None else 0


def offset_spans(zone: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime, datetime,
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
            while b - a > QUARTER:
                mid = slot_floor(a + (b - a) / 2)
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


def day_span(since: datetime | None,
             until: datetime | None) -> tuple[str | None, str | None, list[Window]]:
    """Whole UTC days [first, end) for the rollups (ISO dates, None: unbounded), and the
    partial-day windows at either end that are read from the messages themselves."""
    first = None if since is None else _ceil_day(since)
    end = None if until is None else _floor_day(until)
    if first is not None and end is not None and first >= end:
        return first.date().isoformat(), first.date().isoformat(), [(since, until)]
    edges: list[Window] = []
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


def percentiles(hist: Iterable[Any]) -> list[Percentile]:
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
        for q in PERCENTILES[metric]:
            k, seen = max(1, -(-q * n // 100)), 0
            for bucket in sorted(buckets):
                count, total = buckets[bucket]
                seen += int(count)
                if seen >= k:
                    out.append(Percentile(scope, key, metric, q, round(total / count, 6)))
                    break
    return out
