"""Several PBXs on one database (both backends): the PBX is part of a message's identity, and
the log, the reports' filter and CDR recovery each see one PBX at a time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from agent.models import CallRecord, Decision, MessageState
from agent.store.base import MessageFilter
from agent.store.seams import Store

MakeDecision = Callable[..., Decision]
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def test_the_key_names_the_pbx_and_the_default_keeps_the_old_form(
    make_decision: MakeDecision,
) -> None:
    plain = make_decision(call_id="1700.1")
    assert plain.idempotency_key == "1700.1|support-followup|caller|+919812345678"
    assert make_decision(call_id="1700.1", pbx="blr").idempotency_key == (
        "blr|1700.1|support-followup|caller|+919812345678")


async def test_the_same_call_id_on_two_pbxs_is_two_messages(
    store: Store, make_decision: MakeDecision
) -> None:
    rows = []
    for pbx in ("blr", "del", "blr"):  # the second blr is the same call seen again
        row, _ = await store.insert_message(make_decision(call_id="1700.1", pbx=pbx),
                                            state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        rows.append(row)
    assert rows[0].id != rows[1].id and rows[2].id == rows[0].id
    assert (rows[0].pbx, rows[1].pbx) == ("blr", "del")
    only = await store.list_messages(MessageFilter(pbx="del"))
    assert [m.id for m in only] == [rows[1].id]


async def test_recovery_asks_for_its_own_pbx_newest_call(store: Store) -> None:
    await store.save_call(CallRecord(call_id="a.1", ended_at=T0, pbx="blr"))
    await store.save_call(CallRecord(call_id="b.1", ended_at=T0 + timedelta(hours=1), pbx="del"))
    assert await store.newest_call_end("blr") == T0
    assert await store.newest_call_end("del") == T0 + timedelta(hours=1)
    assert await store.newest_call_end() == T0 + timedelta(hours=1)
    assert await store.newest_call_end("mum") is None


async def test_report_and_export_of_one_pbx(
    store: Store, make_decision: MakeDecision, db_arg: str, capsys: object
) -> None:
    import asyncio
    import json

    from agent.cli import build_parser, execute

    now = datetime.now(UTC)
    for pbx, rule in (("blr", "support-followup"), ("del", "missed-call-sorry")):
        await store.insert_message(make_decision(call_id="1700.1", pbx=pbx, rule=rule),
                                   state=MessageState.QUEUED, now=now, next_attempt_at=now)
    parser = build_parser()

    def cli(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return execute(args)

    assert await asyncio.to_thread(cli, "export", "--db", db_arg, "--format", "json",
                                   "--pbx", "del") == 0
    rows = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert [(r["rule"], r["pbx"]) for r in rows] == [("missed-call-sorry", "del")]
    assert await asyncio.to_thread(cli, "export", "--db", db_arg, "--format", "csv") == 0
    lines = capsys.readouterr().out.splitlines()  # type: ignore[attr-defined]
    assert lines[0].endswith(",pbx") and sorted(ln.rsplit(",", 1)[1] for ln in lines[1:]) == [
        "blr", "del"]
    assert await asyncio.to_thread(cli, "report", "--db", db_arg, "--format", "json",
                                   "--pbx", "blr") == 0
    report = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert "support-followup" in json.dumps(report) and "missed-call-sorry" not in json.dumps(report)


async def test_the_pbxes_a_database_holds_for_the_dashboard_picker(
    store: Store, make_decision: MakeDecision
) -> None:
    from agent.store import report_source

    async with report_source(store) as reader:
        assert await reader.pbx_names() == []
    for pbx in ("del", "blr", "del", "default"):
        await store.insert_message(make_decision(call_id=f"{pbx}.1", pbx=pbx),
                                   state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
    # A call that texted nobody still names its PBX.
    await store.save_call(CallRecord(call_id="mum.1", ended_at=T0, pbx="mum"))
    async with report_source(store) as reader:
        assert await reader.pbx_names() == ["blr", "default", "del", "mum"]
