"""Compact stored forms: a call record without what its columns hold, deflated with a preset
dictionary; states as small integers, history times as integer microseconds. Pure: no sqlite
here. The migrations that converted old rows (schema versions 7 and 8) keep frozen copies of
what they used (agent.store.frozen.py): editing this module never changes them."""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.models import CallRecord, Disposition, MessageState, RecipientKind, Trigger

#: The call record's fields that ``calls`` holds in columns of its own (same names). The stored
#: record leaves them out, and every empty field (None, "", [], {}): its JSON was three times
#: the size of what it says. ``ended_at`` stays in it only when it is not UTC (the column is).
COLUMN_FIELDS = ("call_id", "trigger", "disposition", "queue", "caller", "agent", "pbx")
#: The fields the stored record may hold, in the record's order.
_PACKED_FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord)
                       if f.name not in COLUMN_FIELDS)
#: Compact JSON, made once: ``json.dumps`` with options builds an encoder on every call.
JSON_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_UTC_OFFSET = timedelta(0)

#: A call's trigger and disposition in ``calls`` as small integers (schema 18): 0 and 1 take
#: no bytes in a row where the words took 14 and 6-9. Append only: stored rows hold them.
TRIGGER_CODES: Mapping[str, int] = {"call_connected": 0, "call_completed": 1}
DISPOSITION_CODES: Mapping[str, int] = {
    "answered": 0, "missed": 1, "abandoned": 2, "busy": 3, "failed": 4, "voicemail": 5,
}
_TRIGGERS = {c: t for t, c in TRIGGER_CODES.items()}
_DISPOSITIONS = {c: d for d, c in DISPOSITION_CODES.items()}
assert set(TRIGGER_CODES) == {t.value for t in Trigger}, "a new trigger needs a code"
assert set(DISPOSITION_CODES) == {d.value for d in Disposition}, "a new disposition needs a code"

#: A message's labels in ``messages`` as small integers (schema 25), the way schema 18 codes a
#: call's trigger: the usual word (a completed call's trigger, a caller, GSM-7, transactional)
#: takes no bytes in a row where it took 5-14. A word without a code is stored as itself and
#: reads back as itself. Append only: stored rows hold them. The trigger's are TRIGGER_CODES.
RECIPIENT_CODES: Mapping[str, int] = {"caller": 0, "agent": 1, "fixed": 2}
ENCODING_CODES: Mapping[str, int] = {"GSM-7": 0, "UCS-2": 1}
CATEGORY_CODES: Mapping[str, int] = {"transactional": 0, "promotional": 1, "service": 2}
#: Each coded message column, and its codes.
MESSAGE_LABELS: Mapping[str, Mapping[str, int]] = {
    "trigger": TRIGGER_CODES, "recipient_kind": RECIPIENT_CODES, "encoding": ENCODING_CODES,
    "category": CATEGORY_CODES,
}
_LABEL_WORDS = {col: {c: w for w, c in codes.items()} for col, codes in MESSAGE_LABELS.items()}
assert set(RECIPIENT_CODES) == {k.value for k in RecipientKind}, "a new kind needs a code"


def label_code(column: str, word: str) -> int | str:
    """A message label as stored (schema 25): its code, or the word itself when it has none."""
    return MESSAGE_LABELS[column].get(word, word)


def label_word(column: str, stored: int | str) -> str:
    """A stored message label as the word it says (a word stored as itself reads as itself)."""
    return _LABEL_WORDS[column][stored] if type(stored) is int else stored


def label_sql(column: str, alias: str = "") -> str:
    """SQL: a stored message label as the word (any other value, a word, as it is)."""
    col = f"{alias}.{column}" if alias else column
    words = " ".join(f"WHEN {c} THEN '{w}'" for c, w in _LABEL_WORDS[column].items())
    return f"(CASE {col} {words} ELSE {col} END)"


def id_key(message_id: str | bytes) -> str | bytes:
    """A message id as SQLite stores it (schema 26): an id the agent makes (32 lowercase hex
    digits) as its 16 bytes, in the row and its unique index where the text took 32; any other
    id as its text. Bytes (an id read from a row) are already stored form."""
    if type(message_id) is bytes or len(message_id) != 32:
        return message_id
    try:
        raw = bytes.fromhex(message_id)
    except ValueError:
        return message_id
    return raw if raw.hex() == message_id else message_id


def id_word(stored: str | bytes) -> str:
    """A stored message id as the text every reader and link shows."""
    return stored.hex() if type(stored) is bytes else stored


def id_sql(col: str) -> str:
    """SQL: a stored message id as its text (``id_word``)."""
    return f"(CASE typeof({col}) WHEN 'blob' THEN lower(hex({col})) ELSE {col} END)"


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

#: Dictionary 2, for what the rules said about a call (``[[rule, matched, reason, skipped]]``):
#: the engine's usual reasons. Never edit, as dictionary 1.
_ZDICT_2 = (
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
OUTCOMES_FORM = b"\x02"
_DICTIONARIES = {_DEFLATE_1: _ZDICT_1, OUTCOMES_FORM: _ZDICT_2}


def deflate_json(text: str, form: bytes = _DEFLATE_1) -> bytes:
    """JSON as stored: a leading byte naming the dictionary, then raw deflate."""
    # memLevel 8, zlib's default: 9 only makes the match-finder's tables bigger (a 128 KiB
    # hash head to allocate and clear for each text instead of 64), and on a text of a few
    # hundred bytes plus the dictionary every match is found either way: the same bytes
    # (tests/unit/test_packing.py), and any memLevel inflates.
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, _DICTIONARIES[form])
    return form + z.compress(text.encode()) + z.flush()


def inflate_json(blob: bytes) -> str:
    zdict = _DICTIONARIES.get(blob[:1])
    if zdict is None:
        raise ValueError(f"stored JSON: unknown form {blob[:1]!r}")
    z = zlib.decompressobj(-15, zdict)
    return (z.decompress(blob[1:]) + z.flush()).decode()


#: Form 3 (schema 20) of what the rules said about a call: the leading byte, the id of its list
#: of rule names in ``rule_names`` (unsigned LEB128), then raw deflate with dictionary 2 and
#: those names as ``["name",1],`` each: the names, the most of a judgement's bytes that
#: dictionary 2 cannot know (they are rules.yaml's), cost a few bytes instead of ~35. Never
#: edit (stored judgements need it): another layout takes another leading byte.
NAMED_OUTCOMES_FORM = b"\x03"


def names_dictionary(names: Sequence[str]) -> bytes:
    return _names_dictionary(tuple(names))


@functools.lru_cache(maxsize=64)
def _names_dictionary(names: tuple[str, ...]) -> bytes:
    # Cached: a list of rule names is rules.yaml's, the same for every call it judges.
    return _ZDICT_2 + "".join(JSON_COMPACT.encode([n, 1]) + "," for n in names).encode()


def put_varint(n: int, out: bytearray) -> None:
    """Append ``n`` (>= 0) as an unsigned LEB128 varint: 7 bits a byte, low first."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def deflate_named(text: str, names_id: int, names: Sequence[str]) -> bytes:
    """A judgement's JSON in form 3, its rule names listed as ``names_id``."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY,
                         names_dictionary(names))
    lead = bytearray(NAMED_OUTCOMES_FORM)
    put_varint(names_id, lead)
    return bytes(lead) + z.compress(text.encode()) + z.flush()


def names_id(blob: bytes) -> tuple[int, int] | None:
    """The rule names id a form 3 judgement lists, and where its deflate starts; None for
    another form."""
    if blob[:1] != NAMED_OUTCOMES_FORM:
        return None
    n = shift = 0
    for i in range(1, len(blob)):
        n |= (blob[i] & 0x7F) << shift
        shift += 7
        if not blob[i] & 0x80:
            return n, i + 1
    raise ValueError("stored judgement: its rule names id is cut short")


def inflate_outcomes(blob: bytes, names: Mapping[int, Sequence[str]]) -> str:
    """A judgement's JSON from any stored form; ``names``: rule names lists by id (form 3)."""
    found = names_id(blob)
    if found is None:
        return inflate_json(blob)
    nid, start = found
    if nid not in names:
        raise ValueError(f"stored judgement: rule names {nid} are not stored")
    z = zlib.decompressobj(-15, names_dictionary(names[nid]))
    return (z.decompress(blob[start:]) + z.flush()).decode()


def pack_record(record: CallRecord) -> bytes:
    """The record as stored beside its columns (``compact_json``, deflated)."""
    return deflate_json(compact_json(record))


def compact_json(record: CallRecord) -> str:
    """The record's JSON without what its columns hold and without empty fields (None, "",
    no tags, no vars): ``CallRecord.to_dict``'s values, built straight from the fields it
    keeps (every completed call is packed on the way from its hangup to its first text)."""
    out: dict[str, Any] = {}
    started, answered = _relative_times(record)
    for k in _PACKED_FIELDS:
        v = getattr(record, k)
        if v is None:
            continue
        if isinstance(v, datetime):
            if k == "ended_at" and v.utcoffset() == _UTC_OFFSET:
                continue  # the column holds it
            if k == "started_at" and started is not None:
                v = started
            elif k == "answered_at" and answered is not None:
                v = answered
            else:
                v = v.isoformat()
        elif isinstance(v, enum.Enum):
            v = v.value
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, Mapping):
            v = dict(v)
        if type(v) in _EMPTIES and not v:
            continue
        out[k] = v
    return JSON_COMPACT.encode(out)


_EMPTIES = frozenset((str, list, dict))


def _relative_times(record: CallRecord) -> tuple[int | None, int | None]:
    """``started_at`` and ``answered_at`` as stored since schema 18 (UTC times of a completed
    call): integer microseconds off where the call's end, duration and wait put them (0, or
    the durations' rounding to the millisecond), a few bytes where the ISO text took ~30
    after deflate. None: stored as ISO text (another offset, no end, no start)."""
    ended, start, answer = record.ended_at, record.started_at, record.answered_at
    if ended is None or start is None or ended.utcoffset() != _UTC_OFFSET \
            or start.utcoffset() != _UTC_OFFSET:
        return None, None
    s = micros(start)
    answered = None
    if answer is not None and answer.utcoffset() == _UTC_OFFSET:
        answered = micros(answer) - (s + _us(record.wait_seconds))
    return s - (micros(ended) - _us(record.duration_seconds)), answered


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def unpack_record(columns: Mapping[str, Any], stored: str | bytes) -> dict[str, Any]:
    """The whole record's dict (``CallRecord.to_dict`` form) from a ``calls`` row: its columns
    under what the stored record says (JSON text before version 8; a record stored whole,
    before version 7, wins as it is). Trigger and disposition are codes since version 18."""
    out: dict[str, Any] = {k: columns[k] for k in COLUMN_FIELDS if columns[k] is not None}
    if type(t := out.get("trigger")) is int:
        out["trigger"] = _TRIGGERS[t]
    if type(d := out.get("disposition")) is int:
        out["disposition"] = _DISPOSITIONS[d]
    ended = columns["ended_at"]
    if ended is not None:  # integer microseconds since schema 11, text before
        out["ended_at"] = from_micros(ended).isoformat() if isinstance(ended, int) else ended
    out.update(json.loads(inflate_json(stored) if isinstance(stored, bytes) else stored))
    if type(started := out.get("started_at")) is int:  # relative (_relative_times)
        end = ended if isinstance(ended, int) else micros(datetime.fromisoformat(ended))
        start = started + end - _us(out.get("duration_seconds", 0.0))
        out["started_at"] = from_micros(start).isoformat()
        if type(answered := out.get("answered_at")) is int:
            out["answered_at"] = from_micros(
                answered + start + _us(out.get("wait_seconds", 0.0))).isoformat()
    return out


def micros(dt: datetime) -> int:
    """A time as integer microseconds since the epoch (UTC; naive = UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def key_digest(key: str) -> int:
    """A message's idempotency key as stored (schema 15): the first 8 bytes of its BLAKE2b as a
    signed 64-bit integer, 8 bytes in the row and its unique index where the text took ~50 in
    each. Two keys of one digest are told apart by the row's columns (``idempotency_key``)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big",
                          signed=True)
