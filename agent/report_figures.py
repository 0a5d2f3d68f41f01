"""Report figures: delivery, latency, CTR, replies and cost, pure functions over plain fact rows."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

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
class FactRow:
    """What the report needs about one message (plain values, so the core needs no database)."""

    rule: str
    gateway: str
    state: str
    reason: str | None
    error_code: str | None
    segments: int
    created_at: datetime
    submitted_at: datetime | None
    final_at: datetime | None
    hangup_to_submit_ms: float | None
    has_link: bool = False
    clicks: int = 0
    sentiments: tuple[str, ...] = ()  # one label per reply: positive/neutral/negative/keyword
    ratings: tuple[int, ...] = ()
    opted_out: bool = False


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


def _failure_reason(r: FactRow) -> str:
    # The store marks receipt-driven states with reason "receipt": the state says more.
    return r.reason if r.reason and r.reason != "receipt" else r.state


def figures(key: str, rows: Sequence[FactRow], price: Decimal | None) -> Figures:
    """The figures for ``rows`` (pure)."""
    states = Counter(r.state for r in rows)
    sent = [r for r in rows if r.submitted_at is not None]
    delivered = [r for r in rows if r.state == "delivered"]
    failures = [r for r in rows if r.state in _FAILED | _UNDELIVERED]
    ttd = [(r.final_at - r.submitted_at).total_seconds() for r in delivered
           if r.final_at and r.submitted_at]
    h2s = [r.hangup_to_submit_ms for r in sent if r.hangup_to_submit_ms is not None]
    linked = [r for r in delivered if r.has_link]
    clicked = sum(1 for r in linked if r.clicks > 0)
    sentiments = Counter(s for r in rows for s in r.sentiments)
    ratings = [x for r in rows for x in r.ratings]
    segments = sum(r.segments for r in sent)
    return Figures(
        key=key, total=len(rows), sent=len(sent), delivered=len(delivered),
        undelivered=sum(states[s] for s in _UNDELIVERED), failed=states["failed"],
        ambiguous=states["ambiguous"], suppressed=states["suppressed"],
        deferred=states["deferred"], pending=states["queued"] + states["submitted"],
        delivery_rate=len(delivered) / len(sent) if sent else None,
        failures_by_reason=dict(Counter(_failure_reason(r) for r in failures).most_common()),
        failures_by_error=dict(Counter(r.error_code for r in failures if r.error_code)
                               .most_common()),
        suppressed_by_reason=dict(Counter(r.reason or "unknown" for r in rows
                                          if r.state == "suppressed").most_common()),
        delivery_p50_s=percentile(ttd, 50), delivery_p95_s=percentile(ttd, 95),
        hangup_to_submit_p50_ms=percentile(h2s, 50), hangup_to_submit_p99_ms=percentile(h2s, 99),
        with_links=len(linked), clicked=clicked, clicks=sum(r.clicks for r in rows),
        ctr=clicked / len(linked) if linked else None,
        replies=sum(sentiments.values()), replies_by_sentiment=dict(sentiments),
        rating_avg=sum(ratings) / len(ratings) if ratings else None,
        opt_outs=sum(1 for r in rows if r.opted_out), segments=segments,
        cost=(price * segments) if price is not None else None,
    )


def compute_report(
    rows: Sequence[FactRow], *, since: datetime | None = None, until: datetime | None = None,
    price_per_segment: Decimal | None = None, currency: str | None = None,
    timezone: str = "UTC",
) -> Report:
    """The whole report from fact rows (pure). Days are the operator's (``timezone``)."""
    zone = ZoneInfo(timezone)
    def grouped(attr: str) -> tuple[Figures, ...]:
        keys = sorted({getattr(r, attr) for r in rows})
        return tuple(figures(k, [r for r in rows if getattr(r, attr) == k], price_per_segment)
                     for k in keys)

    days: dict[date, list[FactRow]] = {}
    for r in rows:
        days.setdefault(r.created_at.astimezone(zone).date(), []).append(r)
    by_day = []
    for d in sorted(days):
        f = figures(d.isoformat(), days[d], None)
        by_day.append(DayPoint(d, f.total, f.sent, f.delivered, f.failed + f.undelivered,
                               f.suppressed, f.delivery_rate))
    return Report(since, until, currency, price_per_segment,
                  figures("all", rows, price_per_segment), grouped("rule"), grouped("gateway"),
                  tuple(by_day), timezone)
