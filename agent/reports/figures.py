"""Report figures: delivery, latency, CTR, replies and cost, pure functions over SQL tallies.

The store aggregates (GROUP BY counts, exact nearest-rank percentiles from window functions);
this core only adds small tallies up, so it is cheap whatever the range and testable without a
database. Percentiles are exact: the k-th smallest value, k = ceil(q/100 * n).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from agent.store.base import DayTally, LinkTally, Percentile, ReplyTally, ReportData, Tally

SENTIMENT_THRESHOLD = 0.05  # VADER's own cut-off for its compound score


def sentiment_label(score: float | None) -> str | None:
    if score is None:
        return None
    if score >= SENTIMENT_THRESHOLD:
        return "positive"
    if score <= -SENTIMENT_THRESHOLD:
        return "negative"
    return "neutral"


@dataclass(frozen=True, slots=True)
class Figures:
    """One row of the report: everything, or one rule, or one gateway."""

    key: str
    total: int
    sent: int  # reached a gateway (submitted, whatever happened next)
    delivered: int
    undelivered: int  # undelivered + expired
    failed: int
    ambiguous: int
    suppressed: int
    deferred: int
    pending: int  # queued or submitted without a final receipt yet
    delivery_rate: float | None  # delivered / sent
    failures_by_reason: Mapping[str, int]
    failures_by_error: Mapping[str, int]
    suppressed_by_reason: Mapping[str, int]
    delivery_p50_s: float | None
    delivery_p95_s: float | None
    hangup_to_submit_p50_ms: float | None
    hangup_to_submit_p99_ms: float | None
    with_links: int  # delivered messages carrying a tracked link
    clicked: int  # of those, how many were clicked at least once
    clicks: int
    ctr: float | None  # clicked / with_links
    replies: int
    replies_by_sentiment: Mapping[str, int]
    rating_avg: float | None
    opt_outs: int
    segments: int  # segments sent (what the operator bills)
    cost: Decimal | None


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: date
    total: int
    sent: int
    delivered: int
    failed: int
    suppressed: int
    delivery_rate: float | None


@dataclass(frozen=True, slots=True)
class Report:
    since: datetime | None
    until: datetime | None
    currency: str | None
    price_per_segment: Decimal | None
    total: Figures
    by_rule: tuple[Figures, ...]
    by_gateway: tuple[Figures, ...]
    by_day: tuple[DayPoint, ...] = field(default=())
    timezone: str = "UTC"  # days in by_day are days in this zone (rules.yaml defaults.timezone)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, float):
        return round(v, 6)
    return v


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(1, math.ceil(q / 100 * len(s)))
    return s[min(k, len(s)) - 1]


_FAILED = {"failed"}
_UNDELIVERED = {"undelivered", "expired", "partially_delivered"}  # the handset lacks text


def _failure_reason(t: Tally) -> str:
    # The store marks receipt-driven states with reason "receipt": the state says more.
    return t.reason if t.reason and t.reason != "receipt" else t.state


def _most_common(c: Counter[str]) -> dict[str, int]:
    return dict(c.most_common())


def figures(key: str, data: ReportData, price: Decimal | None, *, scope: str = "all") -> Figures:
    """The figures for one scope of ``data`` (pure): ``scope`` all, rule or gateway."""
    def mine(t: Any) -> bool:
        return scope == "all" or getattr(t, scope) == key

    ts = [t for t in data.tallies if mine(t)]
    links = [t for t in data.links if mine(t)]
    replies = [t for t in data.replies if mine(t)]
    pct = {(p.metric, p.q): p.value for p in data.percentiles
           if p.scope == scope and (scope == "all" or p.key == key)}
    states: Counter[str] = Counter()
    for t in ts:
        states[t.state] += t.count
    sent = sum(t.sent for t in ts)
    failures = [t for t in ts if t.state in _FAILED | _UNDELIVERED]
    reasons: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for t in failures:
        reasons[_failure_reason(t)] += t.count
        if t.error_code:
            errors[t.error_code] += t.count
    suppressed: Counter[str] = Counter()
    for t in ts:
        if t.state == "suppressed":
            suppressed[t.reason or "unknown"] += t.count
    with_links = sum(t.linked for t in links if t.delivered)
    clicked = sum(t.clicked for t in links if t.delivered)
    sentiments: Counter[str] = Counter()
    for r in replies:
        sentiments[r.label] += r.count
    ratings = sum(r.ratings for r in replies)
    segments = sum(t.segments for t in ts)
    return Figures(
        key=key, total=sum(states.values()), sent=sent, delivered=states["delivered"],
        undelivered=sum(states[s] for s in _UNDELIVERED), failed=states["failed"],
        ambiguous=states["ambiguous"], suppressed=states["suppressed"],
        deferred=states["deferred"], pending=states["queued"] + states["submitted"],
        delivery_rate=states["delivered"] / sent if sent else None,
        failures_by_reason=_most_common(reasons), failures_by_error=_most_common(errors),
        suppressed_by_reason=_most_common(suppressed),
        delivery_p50_s=pct.get(("delivery", 50)), delivery_p95_s=pct.get(("delivery", 95)),
        hangup_to_submit_p50_ms=pct.get(("h2s", 50)),
        hangup_to_submit_p99_ms=pct.get(("h2s", 99)),
        with_links=with_links, clicked=clicked, clicks=sum(t.clicks for t in links),
        ctr=clicked / with_links if with_links else None,
        replies=sum(sentiments.values()), replies_by_sentiment=dict(sentiments),
        rating_avg=sum(r.rating_sum for r in replies) / ratings if ratings else None,
        opt_outs=sum(r.opt_outs for r in replies), segments=segments,
        cost=(price * segments) if price is not None else None,
    )


def _days(data: ReportData) -> tuple[DayPoint, ...]:
    by: dict[date, Counter[str]] = {}
    for d in data.days:
        c = by.setdefault(d.day, Counter())
        c[d.state] += d.count
        c["_total"] += d.count
        c["_sent"] += d.sent
    out = []
    for day in sorted(by):
        c = by[day]
        out.append(DayPoint(day, c["_total"], c["_sent"], c["delivered"],
                            c["failed"] + sum(c[s] for s in _UNDELIVERED), c["suppressed"],
                            c["delivered"] / c["_sent"] if c["_sent"] else None))
    return tuple(out)


def compute_report(
    data: ReportData, *, since: datetime | None = None, until: datetime | None = None,
    price_per_segment: Decimal | None = None, currency: str | None = None,
    timezone: str = "UTC",
) -> Report:
    """The whole report from the store's tallies (pure). Days in ``data`` are already the
    operator's (``timezone``): the store grouped them so."""
    def grouped(attr: str) -> tuple[Figures, ...]:
        keys = sorted({getattr(t, attr) for t in data.tallies})
        return tuple(figures(k, data, price_per_segment, scope=attr) for k in keys)

    return Report(since, until, currency, price_per_segment,
                  figures("all", data, price_per_segment), grouped("rule"), grouped("gateway"),
                  _days(data), timezone)
