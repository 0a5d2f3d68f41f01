"""Compact stored forms: a call record without what its columns hold, deflated with a preset
dictionary; states as small integers, history times as integer microseconds. Pure: no sqlite
here, the SQL that converts old rows (schema versions 7 and 8) is built from the same
constants."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.models import CallRecord, MessageState

#: The call record's fields that ``calls`` holds in columns of its own (same names). The stored
#: record leaves them out, and every empty field (None, "", [], {}): its JSON was three times
#: the size of what it says. ``ended_at`` stays in it only when it is not UTC (the column is).
COLUMN_FIELDS = ("call_id", "trigger", "disposition", "queue", "caller", "agent", "pbx")
_EMPTY: tuple[Any, ...] = (None, "", [], {})

#: Message states in the history table as small integers. Append only: stored rows hold them.
STATE_CODES: Mapping[str, int] = {
    "queued": 0, "submitted": 1, "delivered": 2, "partially_delivered": 3, "undelivered": 4,
    "expired": 5, "failed": 6, "suppressed": 7, "deferred": 8, "ambiguous": 9,
}
STATES: dict[int, MessageState] = {c: MessageState(s) for s, c in STATE_CODES.items()}
assert set(STATE_CODES) == {s.value for s in MessageState}, "a new state needs a code"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: Raw deflate with this preset dictionary: the record's field names and usual values, so a
#: record of ~270 bytes of JSON stores in ~80 (the record is only ever read whole). Never
#: edit: stored records need it. Another dictionary takes another leading byte.
_ZDICT_1 = (
    b'"agent_name":"","agent_number":"+","language":"en","direction_by":"trunk","wrapup":"",'
    b'"tags":[],"vars":{"TICKET":""},"hangup_by":"system","hangup_by":"agent",'
    b'"direction":"internal","direction":"outbound","caller_name":"","did":"+",'
    b'"hangup_cause":16,"wait_seconds":0.0,"talk_seconds":0.0,"duration_seconds":0.0,'
    b'"started_at":"20","answered_at":"20","ended_at":"20:00+00:00",'
    b'"direction":"inbound","agent_name":"","hangup_by":"caller"'
)
_DEFLATE_1 = b"\x01"


def deflate_json(text: str) -> bytes:
    """A record's JSON as stored: a leading byte naming the dictionary, then raw deflate."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _ZDICT_1)
    return _DEFLATE_1 + z.compress(text.encode()) + z.flush()


def inflate_json(blob: bytes) -> str:
    if blob[:1] != _DEFLATE_1:
        raise ValueError(f"stored call record: unknown form {blob[:1]!r}")
    z = zlib.decompressobj(-15, _ZDICT_1)
    return (z.decompress(blob[1:]) + z.flush()).decode()


#: The SQL functions the migrations call, registered on the connection that migrates.
MIGRATION_FUNCTIONS = {"aftercall_deflate_json": deflate_json}


def pack_record(record: CallRecord) -> bytes:
    """The record as stored beside its columns (``compact_json``, deflated)."""
    return deflate_json(compact_json(record))


def compact_json(record: CallRecord) -> str:
    """The record's JSON without what its columns hold and without empty fields."""
    out: dict[str, Any] = {}
    for k, v in record.to_dict().items():
        if k in COLUMN_FIELDS or any(v == e and type(v) is type(e) for e in _EMPTY):
            continue
        if k == "ended_at" and record.ended_at is not None \
                and record.ended_at.utcoffset() == timedelta(0):
            continue
        out[k] = v
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def unpack_record(columns: Mapping[str, Any], stored: str | bytes) -> dict[str, Any]:
    """The whole record's dict (``CallRecord.to_dict`` form) from a ``calls`` row: its columns
    under what the stored record says (JSON text before version 8; a record stored whole,
    before version 7, wins as it is)."""
    out: dict[str, Any] = {k: columns[k] for k in COLUMN_FIELDS if columns[k] is not None}
    if columns["ended_at"] is not None:
        out["ended_at"] = columns["ended_at"]
    out.update(json.loads(inflate_json(stored) if isinstance(stored, bytes) else stored))
    return out


def micros(dt: datetime) -> int:
    """A time as integer microseconds since the epoch (UTC; naive = UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def micros_sql(iso: str) -> str:
    """SQL: the stored fixed-width UTC text time ``iso`` ('2024-05-01T09:00:00.123456Z') as
    integer microseconds since the epoch."""
    return (f"(CAST(strftime('%s', {iso}) AS INTEGER) * 1000000"
            f" + CAST(substr({iso}, 21, 6) AS INTEGER))")


def state_code_sql(col: str) -> str:
    """SQL: a state's name in ``col`` as its code."""
    return "CASE " + col + "".join(f" WHEN '{s}' THEN {c}" for s, c in STATE_CODES.items()) \
        + " END"


def _iso_micros_sql(v: str) -> str:
    # A Python isoformat() time ('...T09:00:00+00:00', with '.123456' when it has them).
    return (f"(CAST(strftime('%s', {v}) AS INTEGER) * 1000000 + CASE WHEN substr({v}, 20, 1)"
            f" = '.' THEN CAST(substr({v}, 21, 6) AS INTEGER) ELSE 0 END)")


def columns_from_record_sql(record: str) -> str:
    """SQL SET list: each column's field as the whole record says it (the record was the
    source the columns were copied from)."""
    return ", ".join(
        f"{c} = CASE WHEN json_type({record}, '$.{c}') IS NULL THEN {c}"
        f" ELSE json_extract({record}, '$.{c}') END" for c in COLUMN_FIELDS if c != "call_id")


def pack_record_sql(record: str, ended_at: str) -> str:
    """SQL: what ``compact_json`` keeps of a record stored whole (JSON text in ``record``), once
    the columns hold what it says (``columns_from_record_sql``)."""
    fields = ",".join(f"'{f}'" for f in COLUMN_FIELDS)
    keep = (f"key NOT IN ({fields}) AND type <> 'null'"
            " AND NOT (type = 'text' AND value = '')"
            " AND NOT (type = 'array' AND value = '[]')"
            " AND NOT (type = 'object' AND value = '{}')"
            # an end in UTC at the column's instant is the column's
            f" AND NOT (key = 'ended_at' AND value LIKE '%+00:00'"
            f" AND {ended_at} IS NOT NULL AND {_iso_micros_sql('value')} = {micros_sql(ended_at)})")
    value = ("CASE type WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')"
             " WHEN 'object' THEN json(value) WHEN 'array' THEN json(value) ELSE value END")
    return (f"(SELECT coalesce(json_group_object(key, {value}), '{{}}')"
            f" FROM json_each({record}) WHERE {keep})")
