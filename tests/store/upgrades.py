"""What an upgraded SQLite file reads back as, for the schema upgrade tests."""

from __future__ import annotations

from dataclasses import replace

from agent.models import idempotency_key
from agent.store.base import MessageRow


def as_read_since_15(row: MessageRow, *, pruned: bool = False) -> MessageRow:
    """``row`` as a store at schema 15 or later reads it back: the idempotency key its columns
    make (the file keeps only the digest of the one it had: tests/store/test_schema_15.py checks
    that digest), ``pruned:ID`` for a pruned row, and no ``updated_at`` of its own (the latest
    of the row's times)."""
    key = f"pruned:{row.id}" if pruned else idempotency_key(
        row.pbx, row.call_id, row.rule, row.recipient_kind.value, row.number)
    times = (row.created_at, row.queued_at, row.submitting_since, row.submitted_at, row.final_at)
    return replace(row, idempotency_key=key, updated_at=max(t for t in times if t is not None))
