"""Schema 18 (what the rules said when a call completed in the call's own row; a call's trigger
and disposition as codes; a completed call's start and answer as microseconds off its end): a
version 17 file with calls of every trigger, disposition and time zone, judged or not, upgrades
keeping every call record, every judgement (when it was decided, to the microsecond) and what
the calls view lists and explains."""

from __future__ import annotations

import json
import random
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.models import CallRecord, Disposition, RuleOutcome, Trigger
from agent.store.base import CallFilter
from agent.store.packing import (
    COLUMN_FIELDS,
    deflate_json,
    inflate_json,
    micros,
    pack_record,
    unpack_record,
)
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.calls import pack_outcomes, unpack_outcomes
from agent.store.sqlite.synth import migrate
from tests.unit.test_packing import records

END = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
_EMPTY: tuple[Any, ...] = (None, "", [], {})


def _v17_record(record: CallRecord) -> bytes:
    """The record as schema 17 stored it: every non-empty field its columns do not hold, the
    end only when not UTC, times as ISO text."""
    out = {k: v for k, v in record.to_dict().items()
           if k not in COLUMN_FIELDS and not any(v == e and type(v) is type(e) for e in _EMPTY)}
    if record.ended_at is not None and record.ended_at.utcoffset() == timedelta(0):
        del out["ended_at"]
    return deflate_json(json.dumps(out, separators=(",", ":"), ensure_ascii=False))


def _live(rng: random.Random, i: int) -> CallRecord:
    """A call as the tracker records it: times to the microsecond, durations to the ms."""
    start = END - timedelta(days=rng.randrange(300), microseconds=rng.randrange(10**11))
    answer = start + timedelta(microseconds=rng.randrange(60 * 10**6)) if i % 3 else None
    end = (answer or start) + timedelta(microseconds=rng.randrange(900 * 10**6))
    wait = ((answer or end) - start).total_seconds()
    return CallRecord(
        call_id=f"{int(start.timestamp())}.{i}", trigger=Trigger.CALL_COMPLETED,
        caller=f"+9198{rng.randrange(10**8):08d}", did="+918045671234",
        queue=rng.choice([None, "Support"]), agent=rng.choice([None, "2001"]),
        disposition=list(Disposition)[i % len(Disposition)], started_at=start,
        answered_at=answer, ended_at=end, wait_seconds=round(wait, 3),
        talk_seconds=round((end - (answer or end)).total_seconds(), 3),
        duration_seconds=round((end - start).total_seconds(), 3), hangup_cause=16,
        vars={"TICKET": str(i)}, pbx=rng.choice(["default", "blr"]))


def _outcomes(rng: random.Random, trigger: Trigger) -> list[RuleOutcome]:
    return [RuleOutcome(f"rule-{k}", rng.random() < 0.5,
                        rng.choice([None, "disposition is answered, rule wants one of ['missed']"]),
                        rng.choice([(), ("caller",)]), trigger)
            for k in range(rng.randrange(1, 4))]


def _v17_file(path: Path) -> list[CallRecord]:
    """Calls of every kind (a tracker's, and odd ones: other zones, naive times, no end, a
    connected call), each judged on completion, at connect time, both or never, and the
    judgement of a call never stored; one call with a disposition no code names."""
    rng = random.Random(18)
    calls = {(r.call_id, r.pbx): r for r in
             [*(_live(rng, i) for i in range(300)), *records(300, seed=18)]}
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 0, 17)
        conn.execute("BEGIN")
        for n, r in enumerate(calls.values()):
            created = micros(END) + n * 1_000_003
            conn.execute(
                "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller,"
                " ended_at, created_at, agent, pbx) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (r.call_id, _v17_record(r), r.trigger.value, r.disposition.value, r.queue,
                 r.caller, micros(r.ended_at) if r.ended_at else None, created, r.agent, r.pbx))
            for trigger in Trigger:
                if rng.random() < (0.8 if trigger is Trigger.CALL_COMPLETED else 0.3):
                    # Judged as stored, or later (a retried or reconciled record).
                    at = created + rng.choice([0, 0, 1, 2_500_000, 10**12])
                    conn.execute(
                        "INSERT INTO rule_outcomes (call_id, pbx, trigger, outcomes, decided_at)"
                        " VALUES (?,?,?,?,?)", (r.call_id, r.pbx, trigger.value,
                                                pack_outcomes(_outcomes(rng, trigger)), at))
        for trigger in Trigger:  # a call judged but never stored
            conn.execute("INSERT INTO rule_outcomes (call_id, pbx, trigger, outcomes, decided_at)"
                         " VALUES ('unstored.1', 'default', ?, ?, ?)",
                         (trigger.value, pack_outcomes(_outcomes(rng, trigger)), micros(END)))
        conn.execute("INSERT INTO calls (call_id, record, trigger, disposition, created_at)"
                     " VALUES ('odd.1', ?, 'call_completed', 'congested', 0)",
                     (pack_record(CallRecord(call_id="odd.1")),))
        conn.execute("COMMIT")
    return list(calls.values())


def _rows(path: Path, sql: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()


def _as_stored_v17(path: Path) -> tuple[dict[tuple[str, str], CallRecord],
                                         dict[tuple[str, str], list[RuleOutcome]],
                                         dict[tuple[str, str, str], int]]:
    calls = {(r["call_id"], r["pbx"]): CallRecord.from_dict(unpack_record(r, r["record"]))
             for r in _rows(path, "SELECT * FROM calls WHERE call_id <> 'odd.1'")}
    outcomes: dict[tuple[str, str], list[RuleOutcome]] = {}
    decided = {}
    for r in _rows(path, "SELECT * FROM rule_outcomes ORDER BY trigger = 'call_completed'"):
        outcomes.setdefault((r["call_id"], r["pbx"]), []).extend(
            unpack_outcomes(r["outcomes"], Trigger(r["trigger"])))
        decided[r["call_id"], r["pbx"], r["trigger"]] = r["decided_at"]
    return calls, outcomes, decided


async def test_version_17_file_upgrades_keeping_every_call_and_judgement(tmp_path: Path) -> None:
    path = tmp_path / "v17.db"
    made = _v17_file(path)
    calls, outcomes, decided = _as_stored_v17(path)
    assert len(calls) == len(made) > 500 and len(outcomes) > 400
    assert {c.disposition for c in calls.values()} == set(Disposition)
    assert {c.trigger for c in calls.values()} == set(Trigger)
    assert any(r.started_at and r.started_at.utcoffset() != timedelta(0) for r in made)

    async with SqliteStore(path) as store:
        for key, want in calls.items():
            assert await store.get_call(key[0], pbx=key[1]) == want, key
        for key in {*calls, *outcomes}:
            assert await store.rule_outcomes(key[0], pbx=key[1]) == outcomes.get(key, []), key
    # The word without a code is kept as it was, and only that word finds it.
    odd = _rows(path, "SELECT typeof(disposition), disposition FROM calls"
                      " WHERE call_id = 'odd.1'")[0]
    assert tuple(odd) == ("text", "congested")
    # Each judgement says when it was decided, to the microsecond, wherever it is kept.
    now = {(r["call_id"], r["pbx"], "call_completed"): r["created_at"] + r["decided_at"]
           for r in _rows(path, "SELECT * FROM calls WHERE outcomes IS NOT NULL")}
    left = _rows(path, "SELECT call_id, pbx, trigger, decided_at FROM rule_outcomes")
    now |= {(r["call_id"], r["pbx"], r["trigger"]): r["decided_at"] for r in left}
    assert now == decided
    # Only the judgements of calls not stored, and those at connect time, stay in rule_outcomes.
    assert {(r["call_id"], r["trigger"]) for r in left if r["trigger"] == "call_completed"} == {
        ("unstored.1", "call_completed")}
    # Codes, and a tracker's times as small offsets: the stored record no longer holds them.
    assert {tuple(r) for r in _rows(path, "SELECT DISTINCT typeof(trigger) FROM calls")} == {
        ("integer",)}
    tracker = {(r.call_id, r.pbx) for r in made if r.did == "+918045671234"}
    for r in _rows(path, "SELECT call_id, pbx, record FROM calls"):
        if (r["call_id"], r["pbx"]) in tracker:
            stored = json.loads(inflate_json(r["record"]))
            assert abs(stored["started_at"]) <= 500, stored
            assert abs(stored.get("answered_at", 0)) <= 500, stored

    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DELETE FROM calls WHERE call_id = 'odd.1'")
        conn.commit()
    async with SqliteStore(path) as store:
        listed = await store.list_calls(CallFilter(limit=10_000))
        assert {(c.record.call_id, c.pbx): c.record for c in listed} == calls
        for d in Disposition:
            found = await store.list_calls(CallFilter(disposition=d.value, limit=10_000))
            assert {(c.record.call_id, c.pbx) for c in found} == {
                k for k, c in calls.items() if c.disposition is d}
        assert await store.list_calls(CallFilter(disposition="1")) == []
        # Judged again: the call's row holds the new judgement and when it was made.
        key = next(k for k in calls if k in outcomes)
        again = [RuleOutcome("again", True, trigger=Trigger.CALL_COMPLETED)]
        later = END + timedelta(days=400)
        await store.record_call(replace(calls[key], vars={"TICKET": "again"}), [], now=later,
                                outcomes=again)
        got = await store.rule_outcomes(key[0], pbx=key[1])
        assert got == [o for o in outcomes[key] if o.trigger is Trigger.CALL_CONNECTED] + again
    row = _rows(path, f"SELECT created_at + decided_at FROM calls WHERE call_id = '{key[0]}'"
                      f" AND pbx = '{key[1]}'")[0]
    assert row[0] == micros(later)
