"""The stored call record and rule outcomes: packed by the hot path's own code, byte for byte
what the straightforward forms (``CallRecord.to_dict`` filtered, ``json.dumps``, zlib at
memLevel 9) stored before, and read back whole."""

from __future__ import annotations

import json
import random
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from agent.models import CallRecord, Direction, Disposition, HangupBy, RuleOutcome, Trigger
from agent.store.packing import (
    _DICTIONARIES,
    COLUMN_FIELDS,
    OUTCOMES_FORM,
    compact_json,
    inflate_json,
    pack_record,
    unpack_record,
)
from agent.store.sqlite.calls import pack_outcomes, unpack_outcomes

_EMPTY: tuple[Any, ...] = (None, "", [], {})


def reference_compact_json(record: CallRecord) -> str:
    """The stored record's JSON as it was first written: the whole ``to_dict``, filtered."""
    out: dict[str, Any] = {}
    for k, v in record.to_dict().items():
        if k in COLUMN_FIELDS or any(v == e and type(v) is type(e) for e in _EMPTY):
            continue
        if k == "ended_at" and record.ended_at is not None \
                and record.ended_at.utcoffset() == timedelta(0):
            continue
        out[k] = v
    # Schema 18: a completed call's UTC start, and then its UTC answer, as microseconds off
    # where its end, duration and wait put them.
    utc, us = timedelta(0), timedelta(microseconds=1)
    end, start, answer = record.ended_at, record.started_at, record.answered_at
    if end is not None and start is not None and end.utcoffset() == utc \
            and start.utcoffset() == utc:
        out["started_at"] = (start - end + timedelta(seconds=record.duration_seconds)) // us
        if answer is not None and answer.utcoffset() == utc:
            out["answered_at"] = (answer - start - timedelta(seconds=record.wait_seconds)) // us
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def reference_deflate(text: str, form: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARIES[form])
    return form + z.compress(text.encode()) + z.flush()


def records(n: int, seed: int = 7) -> list[CallRecord]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 30, 9, 15, 2, 70212, tzinfo=UTC)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), None]

    def when() -> datetime | None:
        t = start + timedelta(seconds=rng.randrange(100_000), microseconds=rng.randrange(10**6))
        zone = rng.choice(zones)
        return None if rng.random() < 0.2 else (
            t.replace(tzinfo=None) if zone is None else t.astimezone(zone))

    def text() -> str | None:
        return rng.choice([None, "", "Ravi Kumar", "Zoë “quoted” 😀", "2008", "+919812345678"])

    out = []
    for i in range(n):
        out.append(CallRecord(
            call_id=f"aftercall-lab-{i}.{rng.randrange(99)}",
            trigger=rng.choice(list(Trigger)), caller=rng.choice(["", "+919813000000", "anonymous"]),
            caller_name=text(), did=text(), direction=rng.choice(list(Direction)),
            queue=text(), agent=text(), agent_name=text(), agent_number=text(),
            disposition=rng.choice(list(Disposition)), started_at=when(), answered_at=when(),
            ended_at=when(), wait_seconds=rng.choice([0.0, 0.001, 12.5]),
            talk_seconds=rng.choice([0.0, 61.25]), duration_seconds=rng.choice([0.0, 73.75]),
            hangup_cause=rng.choice([None, 0, 16, 17]),
            hangup_by=rng.choice([None, *HangupBy]),
            tags=tuple(rng.sample(["Billing", "left_in_queue", "VIP", "Support"], rng.randrange(3))),
            vars=rng.choice([{}, {"TICKET": "48213"}, {"SMS_TAG": "Billing", "accountcode": ""}]),
            language=rng.choice([None, "", "en", "hi"]), pbx=rng.choice(["default", "b"]),
            direction_by=rng.choice([None, "pbx.fallback_inbound_contexts from-trunk (a guess)"]),
            wrapup=rng.choice([None, "SALE"]),
        ))
    return out


def test_a_packed_record_is_the_bytes_the_whole_record_filtered_gave() -> None:
    for record in records(2000):
        text = compact_json(record)
        assert text == reference_compact_json(record), record
        assert pack_record(record) == reference_deflate(text, b"\x01"), record


def test_a_packed_record_reads_back_whole() -> None:
    for record in records(300, seed=11):
        columns: dict[str, Any] = {k: getattr(record, k) for k in COLUMN_FIELDS}
        columns["trigger"] = record.trigger.value
        columns["disposition"] = record.disposition.value
        columns["ended_at"] = record.ended_at.isoformat() if record.ended_at else None
        back = CallRecord.from_dict(unpack_record(columns, pack_record(record)))
        # Empty fields are not stored: they come back as the record's defaults.
        expected = record.to_dict()
        for k, v in back.to_dict().items():
            if expected[k] in _EMPTY and v in _EMPTY:
                continue
            if k == "ended_at" and v is not None:
                assert datetime.fromisoformat(v) == datetime.fromisoformat(expected[k])
                continue
            assert v == expected[k], (k, record)


def test_rule_outcomes_pack_as_before_and_read_back() -> None:
    rng = random.Random(3)
    reasons = [None, "queue is 'Billing', rule wants one of ['Support']",
               "rule is disabled (enabled: false)", "tags are [], rule wants any of ['VIP']"]
    for _ in range(500):
        outcomes = [RuleOutcome(f"rule-{j}", rng.random() < 0.3, rng.choice(reasons),
                                tuple(rng.sample(["caller", "agent"], rng.randrange(2))),
                                Trigger.CALL_COMPLETED) for j in range(rng.randrange(1, 7))]
        items: list[list[Any]] = []
        for o in outcomes:
            item: list[Any] = [o.rule, int(o.matched)]
            if o.reason is not None or o.skipped:
                item.append(o.reason)
            if o.skipped:
                item.append(list(o.skipped))
            items.append(item)
        old = reference_deflate(json.dumps(items, separators=(",", ":"), ensure_ascii=False),
                                OUTCOMES_FORM)
        assert pack_outcomes(outcomes) == old
        assert unpack_outcomes(pack_outcomes(outcomes), Trigger.CALL_COMPLETED) == outcomes
        assert json.loads(inflate_json(old)) == items


def test_a_judgement_in_form_3_reads_back_with_its_names_by_any_id() -> None:
    """Form 3 names its list of rule names by an id of one byte or more (LEB128)."""
    from agent.store.packing import deflate_named, inflate_outcomes, names_id
    from agent.store.sqlite.calls import outcomes_json

    rng = random.Random(5)
    for nid in (0, 1, 127, 128, 300, 16_383, 16_384, 2**31 + 5):
        names = [f"rule-{rng.randrange(10)}", "Zoë “quoted” 😀"][: 1 + nid % 2]
        outcomes = [RuleOutcome(n, rng.random() < 0.5, rng.choice([None, "why"]),
                                rng.choice([(), ("caller",)]), Trigger.CALL_COMPLETED)
                    for n in names]
        text = outcomes_json(outcomes)
        blob = deflate_named(text, nid, names)
        found = names_id(blob)
        assert found is not None and found[0] == nid
        assert inflate_outcomes(blob, {nid: names}) == text
        assert unpack_outcomes(blob, Trigger.CALL_COMPLETED, {nid: names}) == outcomes
    assert names_id(pack_outcomes(outcomes)) is None  # form 2 names no list
