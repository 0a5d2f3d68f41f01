"""Rendering reports (table, JSON, CSV) and the SMS log (CSV, JSON) as text."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from agent.reports.figures import Figures, Report

Format = Literal["csv", "json", "table"]

# The SMS log's columns, in order; the docstring of agent.reports says what each one holds.
EXPORT_COLUMNS: tuple[str, ...] = (
    "id", "call_id", "rule", "template", "recipient_kind", "number", "gateway", "sender_id",
    "status", "reason", "error_code", "text", "encoding", "segments", "attempts", "created_at",
    "submitted_at", "final_at", "hangup_to_submit_ms", "delivery_seconds", "receipt_state",
    "receipt_at", "clicks", "replies", "detail", "created_at_local", "submitted_at_local",
    "final_at_local", "receipt_at_local", "scheduled_for", "scheduled_for_local", "pbx",
)


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) from a
# caller's name at the start of a text); a leading apostrophe makes it text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# Control characters (ESC sequences reach the terminal that prints the export) and bidi
# overrides are shown as escapes; newlines stay (CSV quotes them).
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def csv_cell(value: Any) -> Any:
    """A value safe to open in a spreadsheet and to print on a terminal. Numbers (and E.164
    numbers such as +919812345678) stay as they are."""
    if not isinstance(value, str) or not value:
        return value
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                        else f"\\u{ord(m.group(0)):04x}", value)
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + text
    return text


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
    zone = ZoneInfo(report.timezone)

    def local(t: datetime | None, default: str) -> str:
        return t.astimezone(zone).isoformat(timespec="seconds") if t else default

    span = (f"{local(report.since, 'beginning')} .. {local(report.until, 'now')}"
            f" ({report.timezone})")
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
            w.writerow([scope, *("" if d[k] is None else csv_cell(d[k]) for k in _CSV_FIELDS[1:])])
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
        w.writerow({k: "" if r.get(k) is None else csv_cell(r[k]) for k in EXPORT_COLUMNS})
    return buf.getvalue()


class ExportText:
    """The SMS log rendered in pieces for streaming: ``head()``, ``rows(batch)`` per batch, then
    ``tail()``; joined, they equal ``render_messages`` of all the rows (up to JSON whitespace)."""

    def __init__(self, fmt: Literal["csv", "json"]) -> None:
        self.fmt = fmt
        self._written = 0

    def head(self) -> str:
        return "[" if self.fmt == "json" else ",".join(EXPORT_COLUMNS) + "\n"

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> str:
        if self.fmt == "json":
            out = "".join(("\n" if self._written + i == 0 else ",\n")
                          + json.dumps(r, ensure_ascii=False) for i, r in enumerate(rows))
        else:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n",
                               extrasaction="ignore")
            for r in rows:
                w.writerow({k: "" if r.get(k) is None else csv_cell(r[k]) for k in EXPORT_COLUMNS})
            out = buf.getvalue()
        self._written += len(rows)
        return out

    def tail(self) -> str:
        return ("\n]\n" if self._written else "]\n") if self.fmt == "json" else ""
