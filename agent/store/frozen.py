"""Frozen SQL and functions of SQLite migrations 7, 8, 10, 15, 18, 20 and 23, as they were
released: migrations are history, so what they write must not follow later edits of
agent/store/packing.py (the live forms). Never edit; a new shape gets a new migration with its
own frozen helpers."""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import UTC, datetime, timedelta

from agent.store.histpack import pack_events

# packing.COLUMN_FIELDS and packing.STATE_CODES when migration 7 was released.
_COLUMN_FIELDS = ("call_id", "trigger", "disposition", "queue", "caller", "agent", "pbx")
_STATE_CODES = {
    "queued": 0, "submitted": 1, "delivered": 2, "partially_delivered": 3, "undelivered": 4,
    "expired": 5, "failed": 6, "suppressed": 7, "deferred": 8, "ambiguous": 9,
}

# packing's preset dictionary number 1 (leading byte 0x01), as migration 8 deflated with it.
ZDICT_1 = (
    b'"agent_name":"","agent_number":"+","language":"en","direction_by":"trunk","wrapup":"",'
    b'"tags":[],"vars":{"TICKET":""},"hangup_by":"system","hangup_by":"agent",'
    b'"direction":"internal","direction":"outbound","caller_name":"","did":"+",'
    b'"hangup_cause":16,"wait_seconds":0.0,"talk_seconds":0.0,"duration_seconds":0.0,'
    b'"started_at":"20","answered_at":"20","ended_at":"20:00+00:00",'
    b'"direction":"inbound","agent_name":"","hangup_by":"caller"'
)


def deflate_json_v8(text: str) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT_1)
    return b"\x01" + z.compress(text.encode()) + z.flush()


# packing's preset dictionary number 2 (leading byte 0x02), as migration 10 deflated rule
# outcomes with it.
ZDICT_2 = (
    b'"caller type is ","tags are [], rule wants any of [","call day ",") is not one of [",'
    b'"call time "," is outside ","vars.TICKET is missing, rule wants ",'
    b'"no wrap-up code came within 30s of the hangup (decided without it), rule wants one of [",'
    b'"talk 0s is under min_talk ","wait 0s is over max_wait ","rule is disabled (enabled: false)",'
    b'"trigger is call_connected, rule is on call_completed",'
    b'"trigger is call_completed, rule is on call_connected",'
    b'"agent: already taken by rule \'","caller: already taken by rule \'",'
    b'"direction is inbound, rule wants one of [\'outbound\']",'
    b'"disposition is missed, rule wants one of [\'answered\']",'
    b'"disposition is answered, rule wants one of [\'missed\']"],["'
)


def deflate_outcomes_v10(text: str) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT_2)
    return b"\x02" + z.compress(text.encode()) + z.flush()


def key_digest_v15(key: str) -> int:
    """packing.key_digest as migration 15 stored idempotency keys with it."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big",
                          signed=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_V18 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def relative_times_v18(record: object, ended_at: object) -> object:
    """A stored call record (dictionary 1) with its UTC ``started_at``, and then its UTC
    ``answered_at``, as integer microseconds off where the row's end (``ended_at``, integer
    microseconds) and the record's duration and wait put them, as packing stored them when
    migration 18 was released. Any other record, or a time that would not read back as the
    very text it was, is returned as it was."""
    if not isinstance(record, bytes) or record[:1] != b"\x01" or not isinstance(ended_at, int):
        return record
    z = zlib.decompressobj(-15, ZDICT_1)
    data = json.loads((z.decompress(record[1:]) + z.flush()).decode())
    if not isinstance(data, dict) or "ended_at" in data:
        return record

    duration, wait = data.get("duration_seconds", 0.0), data.get("wait_seconds", 0.0)
    if not isinstance(duration, int | float) or not isinstance(wait, int | float):
        return record

    def us(seconds: float) -> int:
        return round(seconds * 1_000_000)

    def at(text: object) -> int | None:
        if not isinstance(text, str):
            return None
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            return None
        if t.utcoffset() != timedelta(0):
            return None
        exact = (t - _EPOCH) // timedelta(microseconds=1)
        back = _EPOCH + timedelta(microseconds=exact)
        return exact if back.isoformat() == text else None

    start = at(data.get("started_at"))
    if start is None:
        return record
    data["started_at"] = start - (ended_at - us(duration))
    answer = at(data.get("answered_at"))
    if answer is not None:
        data["answered_at"] = answer - (start + us(wait))
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, ZDICT_1)
    return b"\x01" + z.compress(_JSON_V18.encode(data).encode()) + z.flush()


def _names_v20(record: object) -> list[str] | None:
    if not isinstance(record, bytes) or record[:1] != b"\x02":
        return None
    z = zlib.decompressobj(-15, ZDICT_2)
    items = json.loads((z.decompress(record[1:]) + z.flush()).decode())
    return [item[0] for item in items]


def outcome_names_v20(record: object) -> str | None:
    """The rule names a judgement of form 2 lists, as ``rule_names.names`` holds them (None:
    another form)."""
    names = _names_v20(record)
    return None if names is None else _JSON_V18.encode(names)


def named_outcomes_v20(record: object, names_id: object) -> object:
    """A judgement of form 2 in form 3 (packing.deflate_named as migration 19 was released),
    its names listed as ``names_id``; any other, as it was."""
    names = _names_v20(record)
    if names is None or not isinstance(names_id, int):
        return record
    assert isinstance(record, bytes)
    z = zlib.decompressobj(-15, ZDICT_2)
    text = z.decompress(record[1:]) + z.flush()
    zdict = ZDICT_2 + "".join(_JSON_V18.encode([n, 1]) + "," for n in names).encode()
    d = zlib.compressobj(9, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    lead, n = bytearray(b"\x03"), names_id
    while n >= 0x80:
        lead.append(n & 0x7F | 0x80)
        n >>= 7
    lead.append(n)
    return bytes(lead) + d.compress(text) + d.flush()


def pack_history_v23(text: str) -> bytes:
    """A message's history rows as migration 23 packs them: ``text`` is the JSON array
    ``[created_at, [[seq, at, state, reason, detail], ...]]`` (``created_at``: the message's,
    integer microseconds, or the fixed-width UTC text of a file before schema 19; null for rows
    of no message, timed from the epoch). The events are in ``seq`` order; the format is
    agent.store.histpack's, whose existing forms never change."""
    created, rows = json.loads(text)
    if created is None:
        base = 0
    elif isinstance(created, int):
        base = created
    else:
        t = datetime.fromisoformat(created)
        t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
        base = (t - _EPOCH) // timedelta(microseconds=1)
    return pack_events(base, ((at, state, reason, detail)
                              for _, at, state, reason, detail in sorted(rows)))


def id_bytes_v26(message_id: object) -> object:
    """Migration 26: a message id of 32 lowercase hex digits as its 16 bytes; any other value
    (another id, NULL) as it is."""
    if not isinstance(message_id, str) or len(message_id) != 32:
        return message_id
    try:
        raw = bytes.fromhex(message_id)
    except ValueError:
        return message_id
    return raw if raw.hex() == message_id else message_id


#: The SQL functions the migrations call, registered on the connection that migrates.
MIGRATION_FUNCTIONS = {"aftercall_deflate_json": deflate_json_v8,
                       "aftercall_deflate_outcomes": deflate_outcomes_v10,
                       "aftercall_key_digest": key_digest_v15,
                       "aftercall_relative_times": relative_times_v18,
                       "aftercall_outcome_names": outcome_names_v20,
                       "aftercall_named_outcomes": named_outcomes_v20,
                       "aftercall_pack_history": pack_history_v23,
                       "aftercall_id_bytes": id_bytes_v26}


def micros_sql(iso: str) -> str:
    """SQL: the fixed-width UTC text time ``iso`` as integer microseconds since the epoch."""
    return (f"(CAST(strftime('%s', {iso}) AS INTEGER) * 1000000"
            f" + CAST(substr({iso}, 21, 6) AS INTEGER))")


def micros_sql_v16(iso: str) -> str:
    """SQL: ``micros_sql`` exact to the microsecond. SQLite reads fractional seconds to the
    millisecond, so ``strftime('%s')`` of a time in its last half millisecond (.9995 s and
    up) says the next second: here the seconds are read without their fraction."""
    return (f"(CAST(strftime('%s', substr({iso}, 1, 19)) AS INTEGER) * 1000000"
            f" + CAST(substr({iso}, 21, 6) AS INTEGER))")


def state_code_sql(col: str) -> str:
    return "CASE " + col + "".join(f" WHEN '{s}' THEN {c}" for s, c in _STATE_CODES.items()) \
        + " END"


def _iso_micros_sql(v: str) -> str:
    return (f"(CAST(strftime('%s', {v}) AS INTEGER) * 1000000 + CASE WHEN substr({v}, 20, 1)"
            f" = '.' THEN CAST(substr({v}, 21, 6) AS INTEGER) ELSE 0 END)")


def columns_from_record_sql(record: str) -> str:
    return ", ".join(
        f"{c} = CASE WHEN json_type({record}, '$.{c}') IS NULL THEN {c}"
        f" ELSE json_extract({record}, '$.{c}') END" for c in _COLUMN_FIELDS if c != "call_id")


def pack_record_sql(record: str, ended_at: str) -> str:
    fields = ",".join(f"'{f}'" for f in _COLUMN_FIELDS)
    keep = (f"key NOT IN ({fields}) AND type <> 'null'"
            " AND NOT (type = 'text' AND value = '')"
            " AND NOT (type = 'array' AND value = '[]')"
            " AND NOT (type = 'object' AND value = '{}')"
            f" AND NOT (key = 'ended_at' AND value LIKE '%+00:00'"
            f" AND {ended_at} IS NOT NULL AND {_iso_micros_sql('value')} = {micros_sql(ended_at)})")
    value = ("CASE type WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')"
             " WHEN 'object' THEN json(value) WHEN 'array' THEN json(value) ELSE value END")
    return (f"(SELECT coalesce(json_group_object(key, {value}), '{{}}')"
            f" FROM json_each({record}) WHERE {keep})")
