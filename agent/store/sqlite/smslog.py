"""The SMS log over SQLite: log pages, counts and export batches, each row with its receipt,
clicks and replies (the SQL and the row shape: agent.store.smslog)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from agent.store.base import MessageFilter
from agent.store.packing import MESSAGE_LABELS, id_sql, label_sql, micros
from agent.store.smslog import LINK_BY_ID, LINK_BY_REF, LOG_COLUMNS, log_sql, where
from agent.store.sqlite.rows import detail_sql, receipt_state_sql, text_sql
from agent.store.stamps import ts

# Integer microseconds as the fixed-width UTC text the log shows ("...T09:00:00.000001Z").
_RECEIVED_TEXT = ("strftime('%Y-%m-%dT%H:%M:%S', r.received_at / 1000000, 'unixepoch')"
                  " || printf('.%06dZ', r.received_at % 1000000)")


def _receipts(conn: sqlite3.Connection) -> tuple[str, str, str]:
    """How a receipt names its message (by ref since schema 14), its time as text (an integer
    since schema 16) and its state as the word (a code since schema 22): the read-only reader
    may be given a file the agent has not yet upgraded."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return ("r.msg = m.ref" if version >= 14 else "r.message_id = m.id",
            _RECEIVED_TEXT if version >= 16 else "r.received_at",
            receipt_state_sql("r.state") if version >= 22 else "r.state")


def micros_times(conn: sqlite3.Connection) -> bool:
    """Whether a message's times are integer microseconds (schema 19) in this file: the
    read-only reader may be given one the agent has not yet upgraded."""
    row = conn.execute("SELECT type FROM pragma_table_info('messages')"
                       " WHERE name = 'created_at'").fetchone()
    return row is not None and row[0].upper() == "INTEGER"


def link_of(conn: sqlite3.Connection) -> str:
    """How a link ``l`` names its message ``m`` in this file (by ref since schema 24; the
    read-only reader may be given a file not yet upgraded)."""
    row = conn.execute("SELECT 1 FROM pragma_table_info('links') WHERE name = 'msg'").fetchone()
    return LINK_BY_REF if row is not None else LINK_BY_ID


def stamp(conn: sqlite3.Connection) -> Callable[[datetime], Any]:
    """A time as this file's messages store it (a filter's bounds)."""
    return micros if micros_times(conn) else ts


# A message's columns as the log reads them, its times as the fixed-width text (schema 19),
# its detail as it reads (schema 21 stores '' for the one its receipt said: rows.detail_sql),
# its labels as their words (schema 25 codes them: packing.label_sql; a file not yet upgraded
# holds the words, which the CASE gives back as they are), its id as its text (schema 26 stores
# 16 bytes: packing.id_sql).
_TIMES = ("created_at", "submitted_at", "final_at", "next_attempt_at")
_COLUMNS = ", ".join(f"{text_sql('m.' + c)} AS {c}" if c in _TIMES
                     else f"{detail_sql('m')} AS detail" if c == "detail"
                     else f"{label_sql(c, 'm')} AS {c}" if c in MESSAGE_LABELS
                     else f"{id_sql('m.id')} AS id" if c == "id"
                     else f"m.{c}"
                     for c in LOG_COLUMNS)


def _log_sql(conn: sqlite3.Connection, f: MessageFilter) -> tuple[str, list[Any]]:
    ints = micros_times(conn)
    receipt_of, received_at, receipt_state = _receipts(conn)
    return log_sql(f, receipt_of, received_at, stamp=micros if ints else ts,
                   columns=_COLUMNS if ints else "m.*", receipt_state=receipt_state,
                   link_of=link_of(conn), id_of=id_sql("m.id"))


def log_page(conn: sqlite3.Connection, f: MessageFilter) -> list[sqlite3.Row]:
    """One page of the SMS log (``f.limit`` rows from ``f.offset``), newest first by default."""
    sql, p = _log_sql(conn, f)
    return conn.execute(sql, p).fetchall()


def log_count(conn: sqlite3.Connection, f: MessageFilter, cap: int) -> tuple[int, bool]:
    """How many messages match ``f``, counting at most ``cap`` (True when the cap was hit), so a
    page header costs an index range, not a year."""
    w, p = where(f, stamp=stamp(conn))
    n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM messages m{w} LIMIT ?) t",
                     [*p, cap + 1]).fetchone()[0]
    return min(n, cap), n > cap


def log_batches(conn: sqlite3.Connection, f: MessageFilter,
                size: int) -> Iterator[list[sqlite3.Row]]:
    """The whole log for ``f`` in batches of ``size`` rows, for streaming exports."""
    sql, p = _log_sql(conn, f)
    cur = conn.execute(sql, p)
    while batch := cur.fetchmany(size):
        yield batch
