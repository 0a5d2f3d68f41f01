"""Persistence behind per-consumer seams (seams.py): SQLite (the default, one file) or PostgreSQL (shared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.store.seams import Store


def is_postgres_url(db: object) -> bool:
    """``postgresql://...`` or ``postgres://...``; anything else is a SQLite file path."""
    return isinstance(db, str) and db.split("://", 1)[0] in ("postgresql", "postgres") and (
        "://" in db
    )


def make_store(db: str | Path, *, owner: str | None = None) -> Store:
    """The store a ``--db`` value names (unopened): a PostgreSQL URL or a SQLite file."""
    if is_postgres_url(db):
        from agent.store.postgres import PostgresStore

        return PostgresStore(str(db), owner=owner)
    from agent.store.sqlite import SqliteStore

    return SqliteStore(db)


def report_source(store: Any) -> Any:
    """Where reports and export read ``store`` from, off the event loop: its SQLite file through
    a read-only connection in a worker thread, or a database server's (PostgreSQL's) own pool.
    Chosen here, beside ``make_store``, so neither backend's report code imports the other's."""
    if hasattr(store, "report_rows"):
        from agent.store.server_reports import ServerReportSource

        return ServerReportSource(store)
    path = getattr(store, "path", None)
    if path is None:  # said plainly rather than failing on a missing attribute
        raise StoreError("reports and export read a SQLite file; this store is not one")
    from agent.store.sqlite.reports import ReportReader

    return ReportReader(path)
