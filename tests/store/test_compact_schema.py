"""Schema versions 7 and 8 (compact stored shapes): a version 6 file with real rows is
converted keeping every row and every fact, and new rows are written in the same shape."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from agent.models import (
    CallRecord,
    Decision,
    Direction,
    Disposition,
    HangupBy,
    MessageState,
    Receipt,
    ReceiptState,
    Trigger,
)
from agent.reports import build_report
from agent.store.base import CallFilter, MessageEvent, MessageFilter
from agent.store.packing import inflate_json, pack_record
from agent.store.smslog import LINK_BY_REF, RARE_STATES, log_sql
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.messages import DUE_SQL, NEXT_DUE_SQL
from agent.store.sqlite.reports import ReportReader
from agent.store.sqlite.synth import create_schema, generate

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))


def _rows(path: Path, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(path) as c:
        c.row_factory = sqlite3.Row
        return c.execute(sql).fetchall()


# Records the way version 6 stored them: the whole record as JSON beside its columns.
_ODD = (
    CallRecord(call_id="odd.1", caller="+919812345678", caller_name="Zoë Ünlü",
               did="+918045671234", direction=Direction.OUTBOUND, queue=None, agent="2001",
               disposition=Disposition.ANSWERED, started_at=END - timedelta(minutes=5),
               answered_at=END - timedelta(minutes=4),
               ended_at=(END - timedelta(minutes=1)).astimezone(IST),  # not UTC: kept
               wait_seconds=0.0, talk_seconds=180.5, duration_seconds=240.0, hangup_cause=16,
               hangup_by=HangupBy.AGENT, tags=("vip", "Support"),
               vars={"TICKET": "42", "EMPTY": ""}, language="hi", pbx="north",
               direction_by="trunk", wrapup="SALE"),
    CallRecord(call_id="odd.2", trigger=Trigger.CALL_CONNECTED, caller="anonymous"),
)


def _v6_file(path: Path) -> None:
    generate(path, messages=1500, days=20, end=END, seed=11, chunk=500, upgrade=False)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        create_schema(conn, version=6)  # already there: nothing to do
        for r in _ODD:
            conn.execute(
                "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller,"
                " ended_at, created_at, agent, pbx) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (r.call_id, json.dumps(r.to_dict()), r.trigger.value, r.disposition.value,
                 r.queue, r.caller,
                 r.ended_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                 if r.ended_at else None, "2026-11-30T12:00:00.000000Z", r.agent, r.pbx))
        # An unmatched receipt (its raw text is kept) with no SMSC id nor error.
        conn.execute(
            "INSERT INTO receipts (message_id, smsc_id, gateway, state, error_code, done_at,"
            " received_at, raw, dedupe_key) VALUES (NULL, 'nobody', 'smsc', 'delivered', NULL,"
            " NULL, '2026-11-30T11:00:00.000000Z', 'id:nobody stat:DELIVRD', 'k')")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
    finally:
        conn.close()


async def test_version_6_file_converts_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    _v6_file(path)
    calls = {r["call_id"]: CallRecord.from_dict(json.loads(r["record"]))
             for r in _rows(path, "SELECT call_id, record FROM calls")}
    events: dict[str, list[MessageEvent]] = {}
    for r in _rows(path, "SELECT * FROM message_events ORDER BY id"):
        events.setdefault(r["message_id"], []).append(MessageEvent(
            r["message_id"], datetime.fromisoformat(r["at"]), MessageState(r["state"]),
            r["reason"], r["detail"]))
    receipts = [tuple(r)[:8] + (r["raw"] if r["message_id"] is None else "",)
                for r in _rows(path, "SELECT * FROM receipts ORDER BY id")]
    counts = {t: _rows(path, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("messages", "message_smsc_ids", "links", "clicks", "replies")}
    assert len(calls) > 1000 and sum(map(len, events.values())) > 3000 and len(receipts) > 1000
    async with ReportReader(path) as reader:  # read-only: the file stays at version 6
        report_before = (await build_report(reader)).to_dict()

    async with SqliteStore(path) as store:
        report_after = (await build_report(store)).to_dict()
        for call_id, record in calls.items():
            assert await store.get_call(call_id, pbx=record.pbx) == record, call_id
        for mid, history in events.items():
            assert await store.message_events(mid) == history, mid
        got = [(r.id, r.message_id, r.smsc_id, r.gateway, r.state, r.error_code,
                r.done_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if r.done_at else None,
                r.received_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), r.raw)
               for r in await store.receipts()]
        assert got == receipts
        # A receipt already stored is still a repeat, matched or not (no dedupe key now).
        first = (await store.receipts(message_id=receipts[0][1]))[0]
        again = await store.apply_receipt(Receipt(
            gateway=first.gateway, smsc_id=first.smsc_id, state=ReceiptState(first.state),
            error_code=first.error_code, done_at=first.done_at, raw="id:x stat:DELIVRD"))
        assert again.duplicate and again.receipt_id is None
        lost = await store.apply_receipt(Receipt(gateway="smsc", smsc_id="nobody",
                                                 state=ReceiptState.DELIVERED, raw="again"))
        assert lost.duplicate
    # The stored record is what new code writes for the same call (SQL and Python agree).
    for r in _rows(path, "SELECT call_id, record FROM calls"):
        assert r["record"] == pack_record(calls[r["call_id"]]), r["call_id"]
    odd = _rows(path, "SELECT record FROM calls WHERE call_id = 'odd.2'")[0][0]
    assert json.loads(inflate_json(odd)) \
        == {"direction": "inbound", "wait_seconds": 0.0, "talk_seconds": 0.0,
            "duration_seconds": 0.0}
    assert {t: _rows(path, f"SELECT count(*) FROM {t}")[0][0] for t in counts} == counts
    assert not _rows(path, "SELECT name FROM sqlite_master WHERE name = 'message_events'")
    assert report_after == report_before


async def test_new_rows_in_the_compact_shape_read_back_whole(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "a.db") as store:
        for r in _ODD:
            await store.save_call(r, now=END)
            assert await store.get_call(r.call_id, pbx=r.pbx) == r
        listed = {c.record.call_id: c.record for c in await store.list_calls(CallFilter())}
        assert listed == {r.call_id: r for r in _ODD}
    stored = {r[0]: json.loads(inflate_json(r[1])) for r in _rows(
        tmp_path / "a.db", "SELECT call_id, record FROM calls")}
    # Neither what the columns hold nor an empty field is in the JSON; a non-UTC end is.
    assert set(stored["odd.1"]) == {
        "caller_name", "did", "direction", "started_at", "answered_at", "ended_at",
        "wait_seconds", "talk_seconds", "duration_seconds", "hangup_cause", "hangup_by", "tags",
        "vars", "language", "direction_by", "wrapup"}
    assert stored["odd.1"]["ended_at"].endswith("+05:30")
    assert stored["odd.2"] == {"direction": "inbound", "wait_seconds": 0.0,
                               "talk_seconds": 0.0, "duration_seconds": 0.0}


def test_due_messages_are_read_through_an_index_of_states(tmp_path: Path) -> None:
    """The outbox's reads and the SMS log's rarer statuses find their rows through the index of
    states, which holds no delivered or suppressed row (schema 15: SQLite uses it only when the
    query's WHERE has its term)."""
    path = tmp_path / "p.db"
    generate(path, messages=200, days=2, end=END)
    with sqlite3.connect(path) as c:
        (index_sql,) = c.execute("SELECT sql FROM sqlite_schema WHERE name ="
                                 " 'messages_rare_state'").fetchone()
        assert index_sql.endswith(f"WHERE {RARE_STATES}")
        log = [log_sql(MessageFilter(states=(s,), limit=50), "r.msg = m.ref",
                       link_of=LINK_BY_REF)
               for s in (MessageState.FAILED, MessageState.AMBIGUOUS, MessageState.UNDELIVERED)]
        for sql, params in [(DUE_SQL, ("x", 1)), (NEXT_DUE_SQL, ()), *log]:
            plan = " ".join(r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "USING INDEX messages_rare_state (state=?)" in plan, plan
        # The states most rows are in are not in it (a page of them is found by time).
        sql, params = log_sql(MessageFilter(states=(MessageState.DELIVERED,), limit=50),
                              "r.msg = m.ref", link_of=LINK_BY_REF)
        plan = " ".join(r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "messages_rare_state" not in plan, plan


async def test_a_receipt_keeps_its_raw_text_only_while_it_matches_no_message(
        tmp_path: Path, make_decision: Callable[..., Decision]) -> None:
    async with SqliteStore(tmp_path / "r.db") as store:
        row, _ = await store.insert_message(make_decision(), state=MessageState.QUEUED, now=END,
                                            next_attempt_at=END)
        await store.claim_for_submit(row.id, now=END)
        early = await store.apply_receipt(Receipt(gateway="smsc", smsc_id="fast-1",
                                                  state=ReceiptState.DELIVERED, raw="id:fast-1"))
        assert [r.raw for r in await store.receipts(unmatched=True)] == ["id:fast-1"]
        await store.record_submit(row.id, gateway="smsc", smsc_ids=["fast-1"], now=END,
                                  hangup_to_submit_ms=None)
        [kept] = await store.receipts(message_id=row.id)
        assert kept.id == early.receipt_id and kept.raw == "" and kept.smsc_id == "fast-1"
        again = await store.apply_receipt(Receipt(gateway="smsc", smsc_id="fast-1",
                                                  state=ReceiptState.DELIVERED, raw="id:fast-1"))
        assert again.duplicate


def test_the_schema_imports_first_in_a_fresh_interpreter() -> None:
    # The schema reads the compact forms' SQL from agent.store.packing, which must not pull in
    # the SQLite store (whose writer imports the schema back).
    subprocess.run([sys.executable, "-c", "import agent.store.migrations"], check=True,
                   cwd=Path(__file__).parents[2])


def test_migrations_7_and_8_do_not_follow_edits_of_the_live_packing(monkeypatch):
    """Migrations are history: what 7 and 8 write is fixed by their frozen helpers, not by
    packing's live constants and dictionary (which later versions may change)."""
    import importlib

    from agent.store import frozen, migrations, packing
    from agent.store.migrations import v01_06, v07_13

    def rebuilt() -> tuple[tuple[str, ...], ...]:
        # the files that hold migrations 1-8 build their SQL again, then the package joins them
        for part in (v01_06, v07_13):
            importlib.reload(part)
        return importlib.reload(migrations).MIGRATIONS

    before = migrations.MIGRATIONS
    monkeypatch.setattr(packing, "COLUMN_FIELDS", (*packing.COLUMN_FIELDS, "did"))
    monkeypatch.setattr(packing, "STATE_CODES", {**packing.STATE_CODES, "queued": 99})
    monkeypatch.setattr(packing, "_ZDICT_1", b"another dictionary")
    try:
        assert rebuilt()[:9] == before[:9]
        fn = frozen.MIGRATION_FUNCTIONS["aftercall_deflate_json"]
        monkeypatch.undo()
        # what migration 8 stored still reads back through the live inflate (dictionary 1)
        assert packing.inflate_json(fn('{"did":"+91"}')) == '{"did":"+91"}'
    finally:
        monkeypatch.undo()
        rebuilt()


def test_the_frozen_dictionaries_are_the_live_ones() -> None:
    """What migrations 8 and 10 deflated, the live code inflates (same bytes, same lead byte)."""
    from agent.store import frozen, packing

    assert packing.inflate_json(frozen.deflate_json_v8('{"a":1}')) == '{"a":1}'
    assert packing.inflate_json(frozen.deflate_outcomes_v10('[["a",1]]')) == '[["a",1]]'
    assert frozen.ZDICT_1 == packing._ZDICT_1 and frozen.ZDICT_2 == packing._ZDICT_2
