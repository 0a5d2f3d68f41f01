"""What an upgraded SQLite file reads back as, for the schema upgrade tests."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from agent.models import idempotency_key
from agent.store.base import MessageFilter, MessageRow
from agent.store.packing import id_sql, micros
from agent.store.server_reports import _REPLY_SQL, data_from_rows, fact_sql
from agent.store.smslog import LINK_BY_REF, where
from agent.store.sqlite.reports import ReportReader, report_data


def as_read_since_15(row: MessageRow, *, pruned: bool = False) -> MessageRow:
    """``row`` as a store at schema 15 or later reads it back: the idempotency key its columns
    make (the file keeps only the digest of the one it had: tests/store/test_schema_15.py checks
    that digest), ``pruned:ID`` for a pruned row, and no ``updated_at`` of its own (the latest
    of the row's times)."""
    key = f"pruned:{row.id}" if pruned else idempotency_key(
        row.pbx, row.call_id, row.rule, row.recipient_kind.value, row.number)
    times = (row.created_at, row.queued_at, row.submitting_since, row.submitted_at, row.final_at)
    return replace(row, idempotency_key=key, updated_at=max(t for t in times if t is not None))


def links_as_stored(path: Path) -> list[tuple[object, ...]]:
    """Each link as (code, its message's id, url, created_at as the fixed-width text), by code,
    at any version: since schema 24 a link names its message by ref and its time is integer
    microseconds."""
    with closing(sqlite3.connect(path)) as c:
        by_ref = c.execute("SELECT 1 FROM pragma_table_info('links') WHERE name = 'msg'").fetchone()
        sql = (f"SELECT l.code, {id_sql('m.id')}, l.url,"
               " strftime('%Y-%m-%dT%H:%M:%S', l.created_at / 1000000, 'unixepoch')"
               " || printf('.%06dZ', l.created_at % 1000000)"
               " FROM links l LEFT JOIN messages m ON m.ref = l.msg ORDER BY l.code"
               if by_ref else "SELECT code, message_id, url, created_at FROM links ORDER BY code")
        return [tuple(r) for r in c.execute(sql)]


async def rolled_and_exact(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The whole report as the rollup tables give it and as computed from the rows themselves,
    each summed over its groups (an upgraded file's rollups must keep adding up to its rows)."""
    from tests.store.test_rollups_both_stores import _summed
    f = MessageFilter(limit=None)
    async with ReportReader(path) as reader:
        rolled = await reader.call(report_data, f, "UTC")
        w, p = where(f, stamp=micros)
        exact = data_from_rows(await reader.rows(f"{fact_sql(LINK_BY_REF)}{w}", p),
                               await reader.rows(f"{_REPLY_SQL}{w}", p), "UTC")
    return _summed(rolled), _summed(exact)
