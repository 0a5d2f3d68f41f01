"""The SMS log over SQLite: log pages, counts and export batches, each row with its receipt,
clicks and replies (the SQL and the row shape: agent.store.smslog)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from agent.store.base import MessageFilter
from agent.store.smslog import log_sql, where

# Integer microseconds as the fixed-width UTC text the log shows ("...T09:00:00.000001Z").
_RECEIVED_TEXT = ("strftime('%Y-%m-%dT%H:%M:%S', r.received_at / 1000000, 'unixepoch')"
                  " || printf('.%06dZ', r.received_at % 1000000)")


def _receipts(conn: sqlite3.Connection) -> tuple[str, str]:
    """How a receipt names its message (by ref since schema 14) and its time as text (an
    integer since schema 16): the read-only reader may be given a file the agent has not yet
    upgraded."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return ("r.msg = m.ref" if version >= 14 else "r.message_id = m.id",
            _RECEIVED_TEXT if version >= 16 else "r.received_at")


def log_page(conn: sqlite3.Connection, f: MessageFilter) -> list[sqlite3.Row]:
    """One page of the SMS log (``f.limit`` rows from ``f.offset``), newest first by default."""
    sql, p = log_sql(f, *_receipts(conn))
    return conn.execute(sql, p).fetchall()


def log_count(conn: sqlite3.Connection, f: MessageFilter, cap: int) -> tuple[int, bool]:
    """How many messages match ``f``, counting at most ``cap`` (True when the cap was hit), so a
    page header costs an index range, not a year."""
    w, p = where(f)
    n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM messages m{w} LIMIT ?) t",
                     [*p, cap + 1]).fetchone()[0]
    return min(n, cap), n > cap


def log_batches(conn: sqlite3.Connection, f: MessageFilter,
                size: int) -> Iterator[list[sqlite3.Row]]:
    """The whole log for ``f`` in batches of ``size`` rows, for streaming exports."""
    sql, p = log_sql(f, *_receipts(conn))
    cur = conn.execute(sql, p)
    while batch := cur.fetchmany(size):
        yield batch
