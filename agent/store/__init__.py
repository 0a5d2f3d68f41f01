"""Persistence behind a Protocol: SQLite (the default, one file) or PostgreSQL (shared)."""

from __future__ import annotations

from pathlib import Path

from agent.store.base import Store


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
