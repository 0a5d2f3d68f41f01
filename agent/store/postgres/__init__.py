"""PostgreSQL Store on asyncpg: versioned schema, a connection pool, several agents per database."""

from __future__ import annotations

from agent.store.postgres.calls import CallOps
from agent.store.postgres.intake import IntakeOps
from agent.store.postgres.messages import MessageOps
from agent.store import is_postgres_url
from agent.store.postgres.pool import describe
from agent.store.postgres.receipts import ReceiptOps
from agent.store.postgres.records import RecordOps
from agent.store.postgres.reports import ReportOps

__all__ = ["PostgresStore", "describe", "is_postgres_url"]


class PostgresStore(IntakeOps, MessageOps, ReceiptOps, RecordOps, CallOps, ReportOps):
    """The shared store. ``await PostgresStore(url, owner="host:8080").open()`` or ``async
    with``. Several agents (one per PBX, or two on one PBX) may use one database at once: the
    idempotency key's unique index, row-locked claims and shared receipt matching keep "one
    SMS per call, rule and recipient" true across them."""
