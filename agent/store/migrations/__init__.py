"""Versioned SQLite schema: migration N brings ``PRAGMA user_version`` from N-1 to N.

The migrations live in one file per range of versions, assembled here in order:
columns.py (what several of them build ``messages`` from), v01_06.py (the first schema and
its first features), v07_13.py (compact shapes, calls by PBX, refs), v14_20.py (digests and
integer times), v21_27.py (codes and bytes). The names other modules import stay here."""

from __future__ import annotations

from agent.store.migrations.columns import (
    _MESSAGE_INDEXES_V15,
    _TRIGGERS_ON_MESSAGES,
    _V15_COLUMNS,
)
from agent.store.migrations.v01_06 import MIGRATIONS_1_6
from agent.store.migrations.v07_13 import _MESSAGE_COLUMNS, MIGRATIONS_7_13
from agent.store.migrations.v14_20 import _V17_FROM_V15, _V19_FROM_V17, MIGRATIONS_14_20
from agent.store.migrations.v21_27 import _MESSAGES_V25, _V25_FROM_V19, MIGRATIONS_21_27

__all__ = [
    "LATEST_VERSION", "MIGRATIONS", "_MESSAGES_V25", "_MESSAGE_COLUMNS", "_MESSAGE_INDEXES_V15",
    "_TRIGGERS_ON_MESSAGES", "_V15_COLUMNS", "_V17_FROM_V15", "_V19_FROM_V17", "_V25_FROM_V19",
]

# Append new migrations (to the last range's file, renamed for its new range, or to a new
# file once that one is near ~400 lines); never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    *MIGRATIONS_1_6, *MIGRATIONS_7_13, *MIGRATIONS_14_20, *MIGRATIONS_21_27,
)

LATEST_VERSION = len(MIGRATIONS)
