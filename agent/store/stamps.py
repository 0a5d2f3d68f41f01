"""The one time form the stores' shared SQL speaks: fixed-width UTC text, so text order is time
order (SQLite stores it; PostgreSQL's report reads take and give times in it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def ts(dt: datetime) -> str: ...
@overload
def ts(dt: None) -> None: ...
@overload
def ts(dt: datetime | None) -> str | None: ...
def ts(dt: datetime | None) -> str | None:
    """``2024-05-01T09:00:00.000000Z``. A naive time is UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@overload
def from_ts(value: str) -> datetime: ...
@overload
def from_ts(value: str | None) -> datetime | None: ...
def from_ts(value: str | None) -> datetime | None:
    """A stored time back as an aware datetime."""
    return None if value is None else datetime.fromisoformat(value)
