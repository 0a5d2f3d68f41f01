"""Reports, the SMS log and exports: what the CLI, the API and the dashboard call.

All SQL lives in the store (agent.store.sqlite.reports): it aggregates in SQL on a read-only
connection in its own worker thread, so a long report never queues behind the writer nor stalls
the event loop. agent.reports.figures turns the tallies into figures (pure), and
agent.reports.render turns them into text. Exports stream: rows are read and written in batches,
never the whole log in memory.

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
    detail                what the reason means for this message (the suppression or failure
                          detail, e.g. "agent 2009 has no mobile"); empty when delivered
    created_at_local, submitted_at_local, final_at_local, receipt_at_local
                          the same times in the operator's zone (rules.yaml defaults.timezone),
                          ISO 8601 with its offset; the UTC columns stay as they are
    pbx                   the PBX of the call: with call_id, which call it was (PBXs without
                          Asterisk's systemname may give two calls one id)

``reason`` is empty for a delivered message. Unless numbers are unmasked, numbers written
inside ``text`` and ``detail`` are masked like ``number``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, time
from decimal import Decimal
from functools import partial
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from agent.models import MessageState
from agent.reports.figures import (
    SENTIMENT_THRESHOLD,
    DayPoint,
    Figures,
    Report,
    ReportData,
    compute_report,
    figures,
    percentile,
    sentiment_label,
)
from agent.reports.render import (
    EXPORT_COLUMNS,
    ExportText,
    Format,
    render_csv,
    render_json,
    render_messages,
    render_report,
    render_table,
)
from agent.store import report_source
from agent.store.base import MessageFilter
from agent.store.seams import ReportSource
from agent.store.smslog import local_iso
from agent.store.sqlite.reports import ReportReader

__all__ = [
    "EXPORT_COLUMNS", "SENTIMENT_THRESHOLD", "DayPoint", "Figures", "Format", "Report",
    "ReportData", "ReportReader", "build_report", "compute_report", "count_messages", "local_iso",
    "export_messages", "figures", "message_rows", "parse_states", "parse_when", "percentile",
    "render_csv", "render_json", "render_messages", "render_report", "render_table",
    "sentiment_label", "stream_export",
]


class _HasPath(Protocol):
    @property
    def path(self) -> Any: ...


def parse_when(value: str, *, end: bool = False, timezone: str = "UTC") -> datetime:
    """An ISO date or date-time from a flag or query string, in ``timezone`` (the operator's)
    unless it says otherwise; a bare date as an end means the end of that day. ValueError
    names what was expected."""
    zone = ZoneInfo(timezone)
    try:
        if len(value) == 10:
            return datetime.combine(datetime.fromisoformat(value).date(),
                                    time.max if end else time.min, zone).astimezone(UTC)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expected an ISO date (2024-05-01) or date-time") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=zone)).astimezone(UTC)


def parse_states(value: str) -> list[MessageState]:
    """``delivered,failed`` -> states; ValueError lists the valid ones."""
    try:
        return [MessageState(s.strip()) for s in value.split(",") if s.strip()]
    except ValueError:
        choices = ", ".join(s.value for s in MessageState)
        raise ValueError(f"expected one or more of {choices}") from None


# -- the SMS log ---------------------------------------------------------------------------------


async def message_rows(
    reader: ReportSource, filters: MessageFilter | None = None, *, unmasked: bool = False,
    timezone: str | None = None,
) -> list[dict[str, Any]]:
    """One page of the SMS log: one dict per message with ``EXPORT_COLUMNS`` as keys (the
    ``*_local`` columns only with a ``timezone``)."""
    return await reader.log_page(filters or MessageFilter(), unmasked=unmasked,
                                 timezone=timezone)


async def count_messages(reader: ReportSource, filters: MessageFilter,
                         cap: int) -> tuple[int, bool]:
    """How many messages match (at most ``cap``; True when there are more)."""
    return await reader.log_count(filters, cap)


async def stream_export(
    reader: ReportSource, filters: MessageFilter | None, format: Literal["csv", "json"], *,
    unmasked: bool = True, batch: int = 2000, timezone: str = "UTC",
) -> AsyncIterator[str]:
    """The export as text chunks, ``batch`` rows at a time, so memory stays flat however long
    the log. Exports are for the operator, so numbers are unmasked by default."""
    out = ExportText(format)
    yield out.head()
    f = filters or MessageFilter(limit=None, newest_first=False)
    async for rows in reader.log_batches(f, batch, unmasked=unmasked, timezone=timezone):
        yield out.rows(rows)
    yield out.tail()


async def export_messages(
    store: _HasPath | ReportReader, filters: MessageFilter | None,
    format: Literal["csv", "json"], *, unmasked: bool = True, timezone: str = "UTC",
) -> str:
    """The whole export as one string (small logs and tests; the CLI streams ``stream_export``)."""
    parts = []
    reader = store if hasattr(store, "log_batches") else report_source(store)
    own = reader is not store
    if own:
        await reader.open()
    try:
        async for text in stream_export(reader, filters, format, unmasked=unmasked,
                                        timezone=timezone):
            parts.append(text)
    finally:
        if own:
            await reader.close()
    return "".join(parts)


async def build_report(
    store: _HasPath | ReportReader, *, since: datetime | None = None,
    until: datetime | None = None, rule: str | None = None, gateway: str | None = None,
    price_per_segment: Decimal | None = None, currency: str | None = None,
    timezone: str = "UTC", pbx: str | None = None,
) -> Report:
    """The report for messages created in [since, until), optionally one rule / gateway.
    ``store`` is a SqliteStore (its file is opened read-only) or an open ReportReader."""
    f = MessageFilter(rule=rule, gateway=gateway, since=since, until=until, limit=None, pbx=pbx)
    compute = partial(compute_report, since=since, until=until,
                      price_per_segment=price_per_segment, currency=currency, timezone=timezone)
    if hasattr(store, "report_data"):  # an open ReportSource
        return await store.offload(compute, await store.report_data(f, timezone))
    async with report_source(store) as reader:
        return await reader.offload(compute, await reader.report_data(f, timezone))
