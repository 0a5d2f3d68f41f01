"""Report and export queries over the store: the SMS log, delivery/CTR/reply figures, CSV/JSON/table.

Reads go through their own read-only SQLite connection to the store's file (WAL lets it read
while the agent writes), so a long report never queues behind the writer. The figures are
computed by ``compute_report``, a pure function over plain rows, so they are testable without
a database.

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
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import aiosqlite

from agent.errors import StoreError
from agent.models import MessageState
from agent.sms.numbers import mask
from agent.store.base import MessageFilter

Format = Literal["csv", "json", "table"]

EXPORT_COLUMNS: tuple[str, ...] = (
    "id", "call_id", "rule", "template", "recipient_kind", "number", "gateway", "sender_id",
    "status", "reason", "error_code", "text", "encoding", "segments", "attempts", "created_at",
    "submitted_at", "final_at", "hangup_to_submit_ms", "delivery_seconds", "receipt_state",
    "receipt_at", "clicks", "replies",
)

SENTIMENT_THRESHOLD = 0.05  # VADER's own cut-off for its compound score


def sentiment_label(score: float | None) -> str | None:
    if score is None:
        return None
    if score >= SENTIMENT_THRESHOLD:
        return "positive"
    if score <= -SENTIMENT_THRESHOLD:
        return "negative"
    return "neutral"


class _HasPath(Protocol):
    path: Path


def _ts(dt: datetime | None) -> str | None:
    # The store's fixed-width UTC form, so comparisons are string comparisons on indexed text.
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v)


class ReportReader:
    """A read-only connection to the store's SQLite file. ``async with ReportReader(path)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None

    @classmethod
    def for_store(cls, store: _HasPath) -> ReportReader:
        return cls(store.path)

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


# -- the SMS log ---------------------------------------------------------------------------------


def _where(f: MessageFilter, alias: str = "m") -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if f.states:
        where.append(f"{alias}.state IN ({','.join('?' * len(f.states))})")
        params.extend(str(s) for s in f.states)
    for column, value in (("rule", f.rule), ("call_id", f.call_id), ("number", f.number),
                          ("gateway", f.gateway)):
        if value is not None:
            where.append(f"{alias}.{column} = ?")
            params.append(value)
    if f.since is not None:
        where.append(f"{alias}.created_at >= ?")
        params.append(_ts(f.since))
    if f.until is not None:
        where.append(f"{alias}.created_at < ?")
        params.append(_ts(f.until))
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
    reader: ReportReader, filters: MessageFilter | None = None, *, unmasked: bool = False
) -> list[dict[str, Any]]:
    """The SMS log: one dict per message with ``EXPORT_COLUMNS`` as keys."""
    f = filters or MessageFilter()
    where, params = _where(f)
    order = "DESC" if f.newest_first else "ASC"
    sql = f"{_LOG_SQL}{where} ORDER BY m.created_at {order}, m.id LIMIT ? OFFSET ?"
    rows = await reader.rows(sql, [*params, -1 if f.limit is None else f.limit, f.offset])
    return [_log_row(r, unmasked) for r in rows]


def _log_row(r: sqlite3.Row, unmasked: bool) -> dict[str, Any]:
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
    return out


# -- the report ----------------------------------------------------------------------------------


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
_UNDELIVERED = {"undelivered", "expired"}


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
) -> Report:
    """The whole report from fact rows (pure)."""
    def grouped(attr: str) -> tuple[Figures, ...]:
        keys = sorted({getattr(r, attr) for r in rows})
        return tuple(figures(k, [r for r in rows if getattr(r, attr) == k], price_per_segment)
                     for k in keys)

    days: dict[date, list[FactRow]] = {}
    for r in rows:
        days.setdefault(r.created_at.astimezone(UTC).date(), []).append(r)
    by_day = []
    for d in sorted(days):
        f = figures(d.isoformat(), days[d], None)
        by_day.append(DayPoint(d, f.total, f.sent, f.delivered, f.failed + f.undelivered,
                               f.suppressed, f.delivery_rate))
    return Report(since, until, currency, price_per_segment,
                  figures("all", rows, price_per_segment), grouped("rule"), grouped("gateway"),
                  tuple(by_day))


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
) -> Report:
    """The report for messages created in [since, until), optionally one rule / gateway.
    ``store`` is a SqliteStore (its file is opened read-only) or an open ReportReader."""
    filters = MessageFilter(rule=rule, gateway=gateway, since=since, until=until, limit=None)
    if isinstance(store, ReportReader):
        rows = await fact_rows(store, filters)
    else:
        async with ReportReader.for_store(store) as reader:
            rows = await fact_rows(reader, filters)
    return compute_report(rows, since=since, until=until, price_per_segment=price_per_segment,
                          currency=currency)


# -- rendering -----------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


_TABLE_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("sent", lambda f: str(f.sent)), ("delivered", lambda f: str(f.delivered)),
    ("rate", lambda f: _pct(f.delivery_rate)), ("undeliv", lambda f: str(f.undelivered)),
    ("failed", lambda f: str(f.failed)), ("suppr", lambda f: str(f.suppressed)),
    ("p50 dlv", lambda f: _num(f.delivery_p50_s, "s")),
    ("p95 dlv", lambda f: _num(f.delivery_p95_s, "s")),
    ("h2s p50", lambda f: _num(f.hangup_to_submit_p50_ms, "ms")),
    ("h2s p99", lambda f: _num(f.hangup_to_submit_p99_ms, "ms")),
    ("CTR", lambda f: _pct(f.ctr)), ("replies", lambda f: str(f.replies)),
    ("optout", lambda f: str(f.opt_outs)), ("segs", lambda f: str(f.segments)),
    ("cost", lambda f: "-" if f.cost is None else f"{f.cost:.2f}"),
)


def _grid(title: str, rows: Sequence[Figures]) -> list[str]:
    head = [title, *(c for c, _ in _TABLE_COLUMNS)]
    body = [[f.key, *(fn(f) for _, fn in _TABLE_COLUMNS)] for f in rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(head), "  ".join("-" * w for w in widths), *(line(b) for b in body)]


def render_table(report: Report) -> str:
    """Plain text for a terminal: totals, per rule, per gateway, then failure/suppression causes."""
    span = (f"{report.since.isoformat() if report.since else 'beginning'} .. "
            f"{report.until.isoformat() if report.until else 'now'}")
    out = [f"aftercall report, {span}"
           + (f" (cost in {report.currency})" if report.currency else ""), ""]
    out += _grid("rule", [*report.by_rule, report.total]) + [""]
    out += _grid("gateway", [*report.by_gateway, report.total]) + [""]
    t = report.total
    for title, m in (("failures by reason", t.failures_by_reason),
                     ("failures by error code", t.failures_by_error),
                     ("suppressed by reason", t.suppressed_by_reason),
                     ("replies by sentiment", t.replies_by_sentiment)):
        if m:
            out.append(f"{title}: " + ", ".join(f"{k} {v}" for k, v in m.items()))
    return "\n".join(out).rstrip() + "\n"


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"


_CSV_FIELDS = ("scope", "key", "total", "sent", "delivered", "undelivered", "failed",
               "ambiguous", "suppressed", "deferred", "pending", "delivery_rate",
               "delivery_p50_s", "delivery_p95_s", "hangup_to_submit_p50_ms",
               "hangup_to_submit_p99_ms", "with_links", "clicked", "clicks", "ctr", "replies",
               "rating_avg", "opt_outs", "segments", "cost")


def render_csv(report: Report) -> str:
    """One CSV row per scope (all, each rule, each gateway)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_FIELDS)
    for scope, rows in (("all", [report.total]), ("rule", report.by_rule),
                        ("gateway", report.by_gateway)):
        for f in rows:
            d = asdict(f)
            w.writerow([scope, *("" if d[k] is None else d[k] for k in _CSV_FIELDS[1:])])
    return buf.getvalue()


def render_report(report: Report, fmt: Format) -> str:
    return {"table": render_table, "json": render_json, "csv": render_csv}[fmt](report)


def render_messages(rows: Sequence[Mapping[str, Any]], fmt: Literal["csv", "json"]) -> str:
    """The SMS log as CSV (header ``EXPORT_COLUMNS``) or a JSON array."""
    if fmt == "json":
        return json.dumps(list(rows), indent=1, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in EXPORT_COLUMNS})
    return buf.getvalue()


async def export_messages(
    store: _HasPath | ReportReader, filters: MessageFilter | None,
    format: Literal["csv", "json"], *, unmasked: bool = True,
) -> str:
    """Every message matching ``filters`` (no limit unless the filter sets one), one row each,
    columns as in the module docstring. Exports are for the operator, so numbers are unmasked
    by default."""
    f = filters or MessageFilter(limit=None, newest_first=False)
    if isinstance(store, ReportReader):
        rows = await message_rows(store, f, unmasked=unmasked)
    else:
        async with ReportReader.for_store(store) as reader:
            rows = await message_rows(reader, f, unmasked=unmasked)
    return render_messages(rows, format)
