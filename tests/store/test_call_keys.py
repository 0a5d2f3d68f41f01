"""A call is (PBX, call id), on both backends: two PBXs without Asterisk's systemname number
their calls alike (``<epoch>.<n>``), and the second PBX's call must not be taken for the first's
(stored, texted, explained, outcomes, the calls view), including in a database written before
the PBX was part of a call's key."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import CallLookupError
from agent.models import CallRecord, Decision, Disposition, MessageState, RuleOutcome
from agent.store.base import CallFilter, MessageFilter, NewMessage
from agent.store.lookup import find_call
from agent.store.seams import Store

MakeDecision = Callable[..., Decision]
OpenStore = Callable[..., Any]  # tests/store/conftest.py's open_store
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
CID = "1714554000.32"  # Asterisk's plain id: what two PBXs without systemname both produce
RULES = Path(__file__).resolve().parents[2] / "rules.yaml"
CALLERS = {"blr": "+919811000301", "del": "+919811000302"}


def _call(pbx: str, **kw: object) -> CallRecord:
    return CallRecord(call_id=CID, caller=CALLERS[pbx], queue="Support", agent="2001",
                      disposition=Disposition.ANSWERED, talk_seconds=90, ended_at=T0, pbx=pbx,
                      **kw)  # type: ignore[arg-type]


async def test_one_call_id_on_two_pbxs_is_two_calls_each_texted_once_and_explainable(
    store: Store, make_decision: MakeDecision, db_arg: str, capsys: pytest.CaptureFixture[str],
) -> None:
    for attempt in range(2):  # the second time: both calls seen again (a replay, a peer agent)
        for pbx in ("blr", "del"):
            d = make_decision(call_id=CID, pbx=pbx, number=CALLERS[pbx], call_ended_at=T0)
            outcomes = [RuleOutcome("support-followup", True),
                        RuleOutcome(f"only-{pbx}", False, "queue is 'Support'")]
            [(row, created)] = await store.record_call(
                _call(pbx), [NewMessage(d, MessageState.QUEUED, next_attempt_at=T0)], now=T0,
                outcomes=outcomes)
            assert created == (attempt == 0) and row.pbx == pbx

    for pbx, caller in CALLERS.items():
        stored = await store.get_call(CID, pbx=pbx)
        assert stored is not None and stored.caller == caller and stored.pbx == pbx
        assert [o.rule for o in await store.rule_outcomes(CID, pbx=pbx)] == [
            "support-followup", f"only-{pbx}"]
    assert await store.get_call(CID, pbx="mum") is None
    rows = await store.list_messages(MessageFilter(call_id=CID))
    assert sorted((r.pbx, r.number) for r in rows) == sorted(CALLERS.items())  # once each

    listed = await store.list_calls(CallFilter(call_id=CID))
    assert sorted((c.pbx, c.record.caller, len(c.messages)) for c in listed) == [
        ("blr", CALLERS["blr"], 1), ("del", CALLERS["del"], 1)]
    [mine] = await store.list_calls(CallFilter(number=CALLERS["del"]))
    assert mine.pbx == "del"
    [tail] = await store.list_calls(CallFilter(number=CALLERS["blr"][-6:]))
    assert tail.pbx == "blr"

    # A person giving the id alone is told both PBXs have it; PBX:CALLID or --pbx picks one.
    with pytest.raises(CallLookupError) as e:
        await find_call(store, CID)
    assert e.value.pbxes == ("blr", "del") and "blr:" + CID in str(e.value)
    assert await find_call(store, f"del:{CID}") == ("del", CID)
    assert await find_call(store, CID, "blr") == ("blr", CID)
    with pytest.raises(CallLookupError):
        await find_call(store, f"mum:{CID}")

    from agent.cli import build_parser, execute

    def explain(*extra: str) -> int:
        # execute, not main: main points the log at this test's captured stdout for good
        args = build_parser().parse_args(["explain", *extra, "--db", db_arg,
                                          "--rules", str(RULES)])
        return execute(args)

    capsys.readouterr()
    assert await asyncio.to_thread(explain, CID) == 1
    err = capsys.readouterr().err
    assert "PBXs blr, del each have a call with this id" in err and "--pbx" in err
    for args, pbx in (((f"del:{CID}",), "del"), ((CID, "--pbx", "blr"), "blr")):
        assert await asyncio.to_thread(explain, *args) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"call {CID} on PBX {pbx}: call_completed"), out
        did = out.split("what the agent did (from the store):", 1)[1]
        other = "del" if pbx == "blr" else "blr"
        assert CALLERS[pbx][-4:] in did and CALLERS[other][-4:] not in did, did


async def _sqlite_at(path: Path, version: int) -> None:
    from agent.store.migrations import MIGRATIONS
    from agent.store.frozen import MIGRATION_FUNCTIONS

    conn = sqlite3.connect(path)
    for name, fn in MIGRATION_FUNCTIONS.items():  # as the store's migration runs them
        conn.create_function(name, 1, fn)
    for migration in MIGRATIONS[:version]:
        for statement in migration:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


async def _postgres_at(url: str, version: int) -> None:
    import asyncpg

    from agent.store.postgres.schema import MIGRATIONS

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE aftercall_schema (version integer NOT NULL)")
            for migration in MIGRATIONS[:version]:
                for statement in migration:
                    await conn.execute(statement)
            await conn.execute("INSERT INTO aftercall_schema VALUES ($1)", version)
    finally:
        await conn.close()


async def test_a_database_keyed_by_call_id_alone_is_migrated_with_its_rows(
    backend: str, open_store: OpenStore, db_path: Path, request: pytest.FixtureRequest,
    make_decision: MakeDecision,
) -> None:
    """The schema before calls were keyed by PBX: every row is kept, under the PBX it was
    stored with (the default for calls from before PBXs were named), with its outcomes."""
    # Migration 9 keyed calls by PBX in both stores: the schema just before it.
    if backend == "sqlite":
        await _sqlite_at(db_path, 8)
    else:
        await _postgres_at(request.getfixturevalue("pg_url"), 8)
    # Rows as the previous release wrote them: calls keyed by id, outcomes without a PBX.
    old_calls = [("1714554000.1", "blr"), ("1714554000.2", "default")]
    if backend == "sqlite":
        from agent.store.packing import pack_record

        conn = sqlite3.connect(db_path)
        for cid, pbx in old_calls:
            rec = CallRecord(call_id=cid, caller="+919811000401", ended_at=T0, pbx=pbx)
            conn.execute("INSERT INTO calls (call_id, record, trigger, disposition, caller,"
                         " ended_at, created_at, pbx) VALUES (?,?,?,?,?,?,?,?)",
                         (cid, pack_record(rec), "call_completed", rec.disposition.value,
                          rec.caller, "2024-05-01T09:00:00.000000Z",
                          "2024-05-01T09:00:00.000000Z", pbx))
            conn.execute("INSERT INTO rule_outcomes (call_id, trigger, position, rule, matched,"
                         " decided_at) VALUES (?, 'call_completed', 0, 'r', 1,"
                         " '2024-05-01T09:00:00.000000Z')", (cid,))
        conn.commit()
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(request.getfixturevalue("pg_url"))
        try:
            for cid, pbx in old_calls:
                rec = CallRecord(call_id=cid, caller="+919811000401", ended_at=T0, pbx=pbx)
                await conn.execute(
                    "INSERT INTO calls (call_id, record, trigger, ended_at, created_at, pbx)"
                    " VALUES ($1, $2::jsonb, 'call_completed', $3, $3, $4)",
                    cid, json.dumps(rec.to_dict()), T0, pbx)
                await conn.execute(
                    "INSERT INTO rule_outcomes (call_id, trigger, position, rule, matched,"
                    " decided_at) VALUES ($1, 'call_completed', 0, 'r', true, $2)", cid, T0)
        finally:
            await conn.close()

    async with open_store() as store:
        for cid, pbx in old_calls:
            kept = await store.get_call(cid, pbx=pbx)
            assert kept is not None and kept.call_id == cid
            assert [o.rule for o in await store.rule_outcomes(cid, pbx=pbx)] == ["r"]
        assert sorted((c.pbx, c.record.call_id) for c in await store.list_calls(CallFilter())) \
            == sorted((p, c) for c, p in old_calls)
        # The same id from another PBX is now a call of its own beside the kept one.
        await store.record_call(CallRecord(call_id="1714554000.1", caller="+919811000402",
                                           ended_at=T0, pbx="del"), [], now=T0,
                                outcomes=[RuleOutcome("s", False, "queue")])
        assert (await store.get_call("1714554000.1", pbx="blr")).caller == "+919811000401"  # type: ignore[union-attr]
        assert (await store.get_call("1714554000.1", pbx="del")).caller == "+919811000402"  # type: ignore[union-attr]
        assert [o.rule for o in await store.rule_outcomes("1714554000.1", pbx="blr")] == ["r"]
        assert [o.rule for o in await store.rule_outcomes("1714554000.1", pbx="del")] == ["s"]
        await store.save_call(CallRecord(call_id="1714554000.1", caller="+919811000403",
                                         ended_at=T0, pbx="blr"), now=T0)
        assert (await store.get_call("1714554000.1", pbx="blr")).caller == "+919811000403"  # type: ignore[union-attr]
        assert (await store.get_call("1714554000.1", pbx="del")).caller == "+919811000402"  # type: ignore[union-attr]
