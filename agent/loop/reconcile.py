"""Recovering calls that ended while the agent had no AMI link, from Asterisk's CSV CDR.

AMI has no replay: a call that ended while the agent was stopped, restarting, or cut off from
Asterisk produced events nobody read. Asterisk wrote its CDR anyway (cdr.conf ``batch=no``),
so on start and after every AMI reconnect the app calls ``reconcile`` with ``since`` = when
the agent last knew it was following the PBX live (minus a small margin).

Exactly once is the store's and the dispatcher's job, not this module's:

* a call the live path already completed is in the store (``get_call`` of its PBX and id
  gives its ``call_completed`` record; the same id on another PBX is another call): skipped. A call stored only as ``call_connected`` (the agent
  was killed after the on-connect SMS, before the hangup) is not complete: it is handed over;
* every other call that ended after ``since`` goes to ``handle_record``, which runs the rules
  and the dispatcher and saves the call (``store.save_call``), so the next reconciliation
  skips it; and should it not, the dispatcher's idempotency key (call, rule, recipient) makes
  a second hand-over send nothing twice;
* a call older than ``max_age`` is still handed over, so that its decision is logged
  (suppressed, ``max_age``, by the policy layer), and counted in ``too_old``;
* calls the live tracker still holds (``in_progress``) are skipped: their CDR is not complete
  yet and the tracker will complete them;
* a ``handle_record`` that raises is logged and counted in ``failed``, and the call is left
  unsaved so the next reconciliation tries it again.

The file is read in a worker thread: it can be large, and the event loop (the AMI reader)
must never wait for disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import BinaryIO, Protocol

import structlog

from agent.calls.cdr import build_records
from agent.calls.cdr_rows import CdrRow, CdrRowError, MalformedRow, ParsedCdr, parse_line
from agent.calls.pbx import PbxProfile
from agent.errors import ConfigError
from agent.models import CallRecord, Trigger

__all__ = ["KnownCalls", "ReconcileResult", "read_cdr", "reconcile"]

log = structlog.get_logger(__name__)

#: Rows that ended this long before ``since`` are still read: a call's first legs (a failed
#: Dial, say) can end long before its last one, and the call is judged by its last.
DEFAULT_LOOKBACK = timedelta(hours=4)
#: Malformed lines logged one by one; the rest are only counted.
_LOG_PROBLEMS = 20


class KnownCalls(Protocol):
    """The part of the Store that reconciliation needs."""

    async def get_call(self, call_id: str, *, pbx: str) -> CallRecord | None: ...


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """``seen``: calls in the CDR that ended after ``since``; each is exactly one of
    ``already_known``, ``in_progress``, ``handled`` or ``failed``. ``too_old`` counts the
    handled calls that ended more than ``max_age`` before ``now``. ``malformed``: lines
    skipped. ``not_in_cdr``: ``fallback`` records handed over because the CDR lacks them."""

    seen: int = 0
    already_known: int = 0
    handled: int = 0
    too_old: int = 0
    in_progress: int = 0
    failed: int = 0
    malformed: int = 0
    not_in_cdr: int = 0


def read_cdr(path: str | os.PathLike[str], *, not_before: datetime,
             tz: tzinfo = UTC, calls_ending_after: datetime | None = None) -> ParsedCdr | None:
    """Blocking: the rows of ``path`` that ended at or after ``not_before``, streamed (the
    file is never held in memory). None when the file does not exist (Asterisk creates it
    with its first CDR). Raises ``ConfigError`` when it exists but cannot be read.

    ``calls_ending_after``: only the rows of calls (by linkedid) with a row that ended after
    it. The file is then read twice: first for those calls, then for their rows, up to where
    the first reading stopped. So memory holds the gap's calls, not every call of the
    lookback (hours of a busy PBX's calls, read again at each reconnect)."""
    name = os.fspath(path)
    rows: list[CdrRow] = []
    problems: list[MalformedRow] = []
    try:
        with open(name, "rb") as fh:
            wanted: set[str] | None = None
            stop: int | None = None
            if calls_ending_after is not None:
                wanted = {row.linkedid for row in _rows(fh, name, tz, None)
                          if row.end > calls_ending_after}
                stop = fh.tell()  # what is appended from here on is live: the tracker's
                fh.seek(0)
            for row in _rows(fh, name, tz, problems, stop):
                if row.end >= not_before and (wanted is None or row.linkedid in wanted):
                    rows.append(row)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the CDR file: {exc.strerror}") from None
    return ParsedCdr(tuple(rows), tuple(problems))


def _rows(fh: BinaryIO, name: str, tz: tzinfo, problems: list[MalformedRow] | None,
          stop: int | None = None) -> Iterator[CdrRow]:
    """The parsed rows of an open CDR file up to byte ``stop``; malformed lines go to
    ``problems`` (dropped when None)."""
    at = 0
    for lineno, raw in enumerate(fh, start=1):
        at += len(raw)
        if stop is not None and at > stop:
            return
        text = raw.decode("utf-8", "replace")
        if not text.strip():
            continue
        try:
            yield parse_line(text, lineno, tz=tz)
        except CdrRowError as exc:
            if problems is not None:
                problems.append(MalformedRow(name, lineno, exc.reason))


async def reconcile(
    *,
    cdr_path: str | os.PathLike[str],
    store: KnownCalls,
    handle_record: Callable[[CallRecord], Awaitable[None]],
    since: datetime,
    now: datetime,
    max_age: timedelta,
    region: str,
    agents: Mapping[str, tuple[str | None, str | None]] | None = None,
    in_progress: Container[str] = frozenset(),
    tz: tzinfo = UTC,
    lookback: timedelta = DEFAULT_LOOKBACK,
    fallback: Iterable[CallRecord] = (),
    pbx: PbxProfile | None = None,
) -> ReconcileResult:
    """Hand every call in the CDR that ended after ``since`` and that the store does not know
    to ``handle_record``, oldest first, one at a time. ``since`` and ``now`` are aware
    datetimes; ``tz`` is the zone of the CSV's times (UTC with cdr.conf ``usegmtime=yes``);
    ``agents`` maps extension -> (name, mobile). ``fallback``: records of the same gap built
    from what AMI showed (resync); each is handed over only if the CDR does not have its call,
    because the CDR's record is the complete one. See the module docstring for the guarantees."""
    if since.tzinfo is None or now.tzinfo is None:
        raise ValueError("since and now must be timezone-aware")
    parsed = await asyncio.to_thread(read_cdr, cdr_path, not_before=since - lookback, tz=tz,
                                     calls_ending_after=since)
    if parsed is None:
        log.warning("cdr_file_missing", path=os.fspath(cdr_path))
        fallback = list(fallback)
        for rec in fallback:
            await handle_record(rec)
        return ReconcileResult(not_in_cdr=len(fallback))
    for p in parsed.problems[:_LOG_PROBLEMS]:
        log.warning("cdr_row_skipped", source=p.source, line=p.line, reason=p.reason)
    # Records are built off the loop too: a long outage can mean thousands of calls.
    records = await asyncio.to_thread(build_records, parsed.rows, region=region, agents=agents,
                                      pbx=pbx)

    seen = known = handled = too_old = busy = failed = 0
    oldest = now - max_age
    for rec in records:
        if rec.ended_at is None or rec.ended_at <= since:
            continue
        seen += 1
        if rec.call_id in in_progress:
            busy += 1
            continue
        stored = await store.get_call(rec.call_id, pbx=rec.pbx)
        if stored is not None and stored.trigger is Trigger.CALL_COMPLETED:
            known += 1
            continue
        old = rec.ended_at < oldest
        try:
            await handle_record(rec)
        except Exception:  # one bad call must not stop the others' recovery
            failed += 1
            log.exception("cdr_call_failed", call_id=rec.call_id)
            continue
        handled += 1
        if old:
            too_old += 1
        log.info("cdr_call_recovered", call_id=rec.call_id, disposition=rec.disposition.value,
                 ended_at=rec.ended_at.isoformat(), too_old=old)
    in_cdr = {(rec.pbx, rec.call_id) for rec in records}
    guessed = 0
    for rec in fallback:
        if (rec.pbx, rec.call_id) not in in_cdr:
            guessed += 1
            await handle_record(rec)
    result = ReconcileResult(seen=seen, already_known=known, handled=handled, too_old=too_old,
                             in_progress=busy, failed=failed, malformed=len(parsed.problems),
                             not_in_cdr=guessed)
    log.info("cdr_reconciled", since=since.isoformat(), **_fields(result))
    return result


def _fields(result: ReconcileResult) -> dict[str, int]:
    return {f: getattr(result, f) for f in result.__dataclass_fields__}
