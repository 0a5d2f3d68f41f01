"""SQLite Store: WAL, versioned schema, one writer thread that group-commits writes."""

from __future__ import annotations

from agent.store.sqlite.calls import CallOps
from agent.store.sqlite.intake import IntakeOps
from agent.store.sqlite.messages import MessageOps
from agent.store.sqlite.receipts import ReceiptOps
from agent.store.sqlite.records import RecordOps
from agent.store.sqlite.retention import RetentionOps
from agent.store.sqlite.rows import ts

__all__ = ["SqliteStore", "ts"]


class SqliteStore(IntakeOps, MessageOps, ReceiptOps, RecordOps, CallOps, RetentionOps):
    """The embedded store. Open with ``await SqliteStore(path).open()`` or ``async with``.

    Every write is an op queued to one writer thread; the writer runs whatever ops are waiting as
    one transaction (each in its own savepoint, so one bad op fails alone) and commits once. Under
    load that is one fsync for many callers; when idle it adds no delay. ``batch_delay`` > 0
    trades latency for bigger groups. Reads use a second, read-only connection (aiosqlite; WAL lets
    it read while the writer writes)."""
