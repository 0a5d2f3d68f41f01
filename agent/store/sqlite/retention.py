"""Retention in the SQLite store: prune details, then whole rows, in small batches; reclaim space.

Two horizons (rules.yaml ``retention:``). Before ``details``: a final message keeps only what the
reports count (rule, gateway, state, reason, times, segments, latency, its links and clicks);
its text, number and detail are cleared, and its state history, receipts, segment ids, call
record and reply texts go. Before ``aggregates``: the message row goes too, with its links,
clicks and replies. Messages not in a final state (queued, deferred, submitted without a receipt,
ambiguous) are never touched, nor is a call with such a message.

Each batch is one short op on the store's writer, so a prune interleaves with live writes
instead of holding the database; candidates are found on the read connection through indexes
that contain only what is left to do (migration 2), so a batch never rescans pruned rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.models import MessageState
from agent.store.packing import micros
from agent.store.sqlite.writer import StoreWriter

# Final states: nothing more will happen to these messages. Everything else is in flight.
FINAL = tuple(s.value for s in MessageState if s.final and s is not MessageState.AMBIGUOUS)
_IN = ",".join(f"'{s}'" for s in FINAL)


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """What a prune removed (or, for a dry run, would remove)."""

    details: int = 0  # messages whose text, number, history and receipts went
    messages: int = 0  # message rows deleted (aggregates horizon)
    calls: int = 0  # call records deleted
    other: int = 0  # unmatched receipts and unlinked replies deleted

    def __add__(self, o: PruneCounts) -> PruneCounts:
        return PruneCounts(self.details + o.details, self.messages + o.messages,
                           self.calls + o.calls, self.other + o.other)

    @property
    def total(self) -> int:
        return self.details + self.messages + self.calls + self.other


_DETAIL_IDS = (f"SELECT id FROM messages WHERE (text IS NOT NULL OR number IS NOT NULL)"
               f" AND created_at < ? AND state IN ({_IN}) ORDER BY created_at LIMIT ?")
_ROW_IDS = f"SELECT id FROM messages WHERE created_at < ? AND state IN ({_IN})" \
    " ORDER BY created_at LIMIT ?"
# A call is (PBX, call id): its rowid names it in a batch, and its messages are its PBX's.
# Its times are integer microseconds (schema 11), as the messages' (schema 19).
# "+m.pbx": a call's messages are found by call id (messages_call); left to itself the planner
# took messages_pbx_created, which walks every message of the PBX for each call (14 s a batch
# at 50,000 messages, inside the writer's op for the re-check).
_NO_LIVE_MESSAGE = ("NOT EXISTS (SELECT 1 FROM messages m WHERE m.call_id = {c}.call_id"
                    " AND +m.pbx = {c}.pbx AND m.state NOT IN ({final}))")
# A call's age counts from its end (calls_ended_at, schema 27); one stored before it ended and
# never ended since (a lost Hangup), from when it was stored: the ended_at IS NULL part of the
# same index holds only those. ``_delete_calls`` re-checks the same age as one COALESCE.
def _old_calls(older: str, order: str = "") -> str:
    return (f"SELECT rowid FROM calls c WHERE {older} AND "
            + _NO_LIVE_MESSAGE.format(c="c", final=_IN) + f"{order} LIMIT ?2")


_CALL_IDS = _old_calls("ended_at < ?1", " ORDER BY ended_at")
_UNENDED_CALL_IDS = _old_calls("ended_at IS NULL AND created_at < ?1")


class RetentionOps(StoreWriter):
    """``prune_batch`` removes one batch; ``count_prunable`` is the dry run;
    ``reclaim_space`` hands freed pages back to the filesystem."""

    async def prune_batch(self, *, details_before: datetime, rows_before: datetime | None,
                          batch: int = 500) -> PruneCounts:
        """One batch of each kind of pruning (0s when nothing is left). Call until ``total`` is 0."""
        # A message's times are integers (schema 19); a reply's are still text.
        d, dm = _iso(details_before), micros(details_before)
        r = micros(rows_before) if rows_before else None
        detail_ids = [x["id"] for x in await self._read(_DETAIL_IDS, (dm, batch))]
        row_ids = [x["id"] for x in await self._read(_ROW_IDS, (r, batch))] if r else []
        call_ids = [x["rowid"] for sql in (_CALL_IDS, _UNENDED_CALL_IDS)
                    for x in await self._read(sql, (micros(details_before), batch))][:batch]

        def op(conn: sqlite3.Connection) -> PruneCounts:
            counts = PruneCounts(
                details=_strip_details(conn, detail_ids, dm),
                messages=_delete_rows(conn, row_ids, r) if row_ids else 0,
                calls=_delete_calls(conn, call_ids, micros(details_before)),
            )
            other = 0
            for sql, before in (  # rows tied to no message: they age out with the details
                ("DELETE FROM receipts WHERE id IN (SELECT id FROM receipts"  # times: schema 16
                 " WHERE msg IS NULL AND received_at < ? ORDER BY received_at LIMIT ?)",
                 micros(details_before)),
                ("DELETE FROM replies WHERE id IN (SELECT id FROM replies"
                 " WHERE message_id IS NULL AND received_at < ? ORDER BY received_at LIMIT ?)", d),
            ):
                other += conn.execute(sql, (before, batch)).rowcount
            return PruneCounts(counts.details, counts.messages, counts.calls, other)

        return await self._write_now(op)

    async def count_prunable(self, *, details_before: datetime,
                             rows_before: datetime | None) -> PruneCounts:
        """What pruning would remove, without removing it (``aftercall prune --dry-run``)."""
        big = 1 << 62
        details = await self._read(f"SELECT count(*) FROM ({_DETAIL_IDS})",
                                   (micros(details_before), big))
        calls = [(await self._read(f"SELECT count(*) FROM ({sql})",
                                   (micros(details_before), big)))[0][0]
                 for sql in (_CALL_IDS, _UNENDED_CALL_IDS)]
        rows = (await self._read(f"SELECT count(*) FROM ({_ROW_IDS})", (micros(rows_before), big))
                if rows_before else None)
        return PruneCounts(details=details[0][0], messages=rows[0][0] if rows else 0,
                           calls=sum(calls))

    async def reclaim_space(self, max_pages: int = 2000) -> int:
        """Return up to ``max_pages`` free pages to the filesystem (incremental vacuum, one short
        write op); 0 when the file was made without auto_vacuum (``aftercall prune --vacuum``)."""
        mode = await self._read("PRAGMA auto_vacuum")
        if not mode or int(mode[0][0]) != 2:
            return 0
        free = await self._read("PRAGMA freelist_count")
        n = min(int(free[0][0]), max_pages)
        if n <= 0:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            conn.execute(f"PRAGMA incremental_vacuum({n})").fetchall()
            return n

        return await self._write_now(op)

    async def space(self) -> dict[str, Any]:
        """File size, free pages and the messages it holds (for the CLI and the benchmark)."""
        page = (await self._read("PRAGMA page_size"))[0][0]
        pages = (await self._read("PRAGMA page_count"))[0][0]
        free = (await self._read("PRAGMA freelist_count"))[0][0]
        row = await self._read("SELECT count(*) FROM messages")
        return {"bytes": page * pages, "free_bytes": page * free, "messages": row[0][0]}


def vacuum_file(path: str | Path) -> None:
    """A full VACUUM that also turns on incremental auto-vacuum for a file made before aftercall
    set it. It rewrites the file and blocks every writer while it runs, so it is only ever run
    by ``aftercall prune --vacuum``, never by the agent."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
    finally:
        conn.close()


def _iso(dt: datetime | None) -> str | None:
    from agent.store.sqlite.rows import ts

    return ts(dt) if dt else None


def _marks(ids: list[Any]) -> str:
    return ",".join("?" * len(ids))


def _live(conn: sqlite3.Connection, ids: list[str], before: int) -> list[str]:
    """Of ``ids``, the messages still older than ``before`` and final. Re-checked inside the
    write: a receipt may have moved a row since it was selected."""
    if not ids:
        return []
    return [r["id"] for r in conn.execute(
        f"SELECT id FROM messages WHERE id IN ({_marks(ids)}) AND created_at < ?"
        f" AND state IN ({_IN})", (*ids, before))]


def _drop_details(conn: sqlite3.Connection, live: list[str]) -> None:
    """The messages' history, receipts and segment ids (the first two name a message by ref,
    schemas 13 and 14)."""
    q = _marks(live)
    for table in ("message_history", "receipts"):
        conn.execute(f"DELETE FROM {table} WHERE msg IN"
                     f" (SELECT ref FROM messages WHERE id IN ({q}))", live)
    conn.execute(
        "DELETE FROM message_smsc_ids WHERE (gateway, smsc_id) IN (SELECT m.gateway, j.value"
        f" FROM messages m, json_each(m.smsc_ids) j WHERE m.id IN ({q}))", live)


def _strip_details(conn: sqlite3.Connection, ids: list[str], before: int) -> int:
    live = _live(conn, ids, before)
    if not live:
        return 0
    _drop_details(conn, live)
    q = _marks(live)
    conn.execute(f"UPDATE replies SET text = '', number = '' WHERE message_id IN ({q})", live)
    cur = conn.execute(
        "UPDATE messages SET text = NULL, number = NULL, detail = NULL, smsc_ids = '[]',"
        f" idem = NULL WHERE id IN ({q})", live)
    return cur.rowcount


def _delete_rows(conn: sqlite3.Connection, ids: list[str], before: int) -> int:
    live = _live(conn, ids, before)
    if not live:
        return 0
    _drop_details(conn, live)
    q = _marks(live)
    conn.execute(f"DELETE FROM replies WHERE message_id IN ({q})", live)
    # links name their message by ref (schema 24)
    refs = f"(SELECT ref FROM messages WHERE id IN ({q}))"
    conn.execute(f"DELETE FROM clicks WHERE code IN (SELECT code FROM links"
                 f" WHERE msg IN {refs})", live)
    conn.execute(f"DELETE FROM links WHERE msg IN {refs}", live)
    return (conn.execute(f"DELETE FROM messages WHERE id IN ({q})", live)).rowcount


def _delete_calls(conn: sqlite3.Connection, ids: list[int], before: int) -> int:
    if not ids:
        return 0
    q = _marks(ids)
    live = [r["rowid"] for r in conn.execute(
        f"SELECT rowid FROM calls WHERE rowid IN ({q})"
        " AND COALESCE(ended_at, created_at) < ? AND "
        + _NO_LIVE_MESSAGE.format(c="calls", final=_IN),
        (*ids, before))]
    if not live:
        return 0
    q = _marks(live)
    # What each rule said about the call goes with it (the calls view reads both).
    conn.execute("DELETE FROM rule_outcomes WHERE (call_id, pbx) IN"
                 f" (SELECT call_id, pbx FROM calls WHERE rowid IN ({q}))", live)
    return (conn.execute(f"DELETE FROM calls WHERE rowid IN ({q})", live)).rowcount
