"""PostgresStore on a real PostgreSQL (the session's throwaway cluster): what only a shared,
networked database has: its schema versions, a wrong URL, several agents on one database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from agent.errors import StoreError
from agent.lab.postgres import free_port
from agent.models import (
    CallRecord,
    Decision,
    MessageState,
    Receipt,
    ReceiptState,
    RuleOutcome,
)
from agent.store.base import NewMessage
from agent.store.postgres import PostgresStore
from agent.store.postgres.messages import STALE_SUBMIT, insert_row
from agent.store.postgres.schema import LATEST_VERSION
from agent.store.segments import RECEIPT_TARGET

MakeDecision = Callable[..., Decision]
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


async def test_fresh_database_is_migrated_to_latest(pg_url: str) -> None:
    async with PostgresStore(pg_url):
        pass
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT max(version) FROM aftercall_schema") == LATEST_VERSION
        tables = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()
    assert {"calls", "messages", "message_events", "receipts", "opt_outs", "dnd", "links",
            "clicks", "replies"} <= tables


async def test_agents_starting_together_migrate_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, owner=f"a{i}") for i in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM aftercall_schema") == 1
    finally:
        await conn.close()


async def test_newer_schema_is_refused_naming_database_and_versions(pg_url: str) -> None:
    async with PostgresStore(pg_url):
        pass
    conn = await asyncpg.connect(pg_url)
    await conn.execute("UPDATE aftercall_schema SET version = 99")
    await conn.close()
    with pytest.raises(StoreError) as info:
        await PostgresStore(pg_url).open()
    text = str(info.value)
    name = pg_url.rsplit("/", 1)[1]
    assert f"'{name}'" in text and "99" in text and f"version {LATEST_VERSION}" in text


async def test_unreachable_server_is_one_line_naming_host_and_database_not_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://agent:s3cr3t-pw@127.0.0.1:{port}/aftercall"
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await PostgresStore(url).open()
    text = str(info.value)
    assert time.monotonic() - started < 5  # one attempt, no retry storm
    assert "\n" not in text and "s3cr3t" not in text
    assert f"127.0.0.1:{port}" in text and "'aftercall'" in text and "cannot connect" in text


async def test_missing_database_is_named(pg_cluster: object) -> None:
    url = pg_cluster.url("no_such_db")  # type: ignore[attr-defined]
    with pytest.raises(StoreError) as info:
        await PostgresStore(url).open()
    assert "'no_such_db'" in str(info.value) and "does not exist" in str(info.value)


def test_cli_exit_code_3_and_one_line_for_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import build_parser, execute

    parser = build_parser()
    url = f"postgresql://agent:s3cr3t-pw@127.0.0.1:{free_port()}/aftercall"
    args = parser.parse_args(["optout", "--db", url, "add", "+919812345678"])
    assert execute(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s3cr3t" not in err and "'aftercall'" in err


# ---- several agents on one database -------------------------------------------------------------


async def test_two_agents_inserting_the_same_calls_create_each_row_once(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        decisions = [make_decision(call_id=f"c{i}") for i in range(30)]

        async def agent(store: PostgresStore, order: list[Decision]) -> list[bool]:
            out = []
            for d in order:
                _, created = await store.insert_message(
                    d, state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
                out.append(created)
            return out

        got_a, got_b = await asyncio.gather(agent(a, decisions), agent(b, decisions[::-1]))
        assert sum(got_a) + sum(got_b) == 30
        assert len(await a.list_messages()) == 30


async def test_an_agent_losing_a_key_to_a_commit_it_waited_for_gets_the_winners_row(
    pg_url: str, make_decision: MakeDecision
) -> None:
    """The record's one statement waits on a key another agent inserted and has not yet
    committed; that row is newer than the statement's snapshot, yet the loser must still get
    it (not a row of its own, not an error), and write nothing more for it."""
    d = make_decision(call_id="race")
    peer = await asyncpg.connect(pg_url)
    async with PostgresStore(pg_url, owner="b") as b:
        try:
            tx = peer.transaction()
            await tx.start()
            won, created = await insert_row(peer, d, MessageState.QUEUED, T0, None, None, T0,
                                            None, "a")
            assert created
            loser = asyncio.create_task(b.record_call(
                None, [NewMessage(d, MessageState.QUEUED, next_attempt_at=T0)], now=T0))
            while not await peer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"):
                assert not loser.done(), loser
                await asyncio.sleep(0.01)
            await tx.commit()
            [(row, created)] = await loser
        finally:
            await peer.close()
        assert not created and row.id == won.id
        assert len(await b.list_messages()) == 1
        assert len(await b.message_events(won.id)) == 1


def _record(make_decision: MakeDecision, i: int, text: str = "hello") -> tuple[
        CallRecord, list[NewMessage], list[RuleOutcome]]:
    call = CallRecord(call_id=f"g{i}", pbx="default", caller=f"+9198000{i:05d}")
    d = make_decision(call_id=f"g{i}", number=f"+9198000{i:05d}", text=text)
    return call, [NewMessage(d, MessageState.QUEUED, next_attempt_at=T0)], [
        RuleOutcome(d.rule, True)]


async def test_records_arriving_together_are_one_statement_and_each_gets_its_rows(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a:
        records = [_record(make_decision, i) for i in range(40)]
        results = await asyncio.gather(*(
            a.record_call(call, msgs, now=T0, outcomes=outcomes)
            for call, msgs, outcomes in records))
        for (call, msgs, _), [(row, created)] in zip(records, results, strict=True):
            assert created and row.call_id == call.call_id
            assert row.idempotency_key == msgs[0].decision.idempotency_key
            assert await a.rule_outcomes(call.call_id, pbx=call.pbx) == [
                RuleOutcome(msgs[0].decision.rule, True)]
            assert await a.get_call(call.call_id, pbx=call.pbx) is not None
        group = a._intakes
        assert group is not None and group.items == 40 and group.writes < 40


async def test_a_bad_record_in_a_group_fails_alone(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a:
        records = [_record(make_decision, i, "bad\x00" if i == 3 else "ok") for i in range(8)]
        results = await asyncio.gather(*(
            a.record_call(call, msgs, now=T0, outcomes=outcomes)
            for call, msgs, outcomes in records), return_exceptions=True)
        assert [isinstance(r, StoreError) for r in results] == [i == 3 for i in range(8)]
        assert len(await a.list_messages()) == 7


async def test_two_agents_recording_the_same_calls_in_groups_create_each_row_once(
    pg_url: str, make_decision: MakeDecision
) -> None:
    """Both agents of a pair write every call, many at once and in opposite orders: groups
    lock keys in key order, so neither waits for the other in a cycle (no deadlock), and each
    row is created by exactly one of them."""
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        records = [_record(make_decision, i) for i in range(60)]

        async def agent(store: PostgresStore, order: list[Any]) -> list[bool]:
            results = await asyncio.gather(*(
                store.record_call(call, msgs, now=T0, outcomes=outcomes)
                for call, msgs, outcomes in order))
            return [created for [(_, created)] in results]

        got_a, got_b = await asyncio.wait_for(
            asyncio.gather(agent(a, records), agent(b, records[::-1])), 30)
        assert sum(got_a) + sum(got_b) == 60
        assert len(await a.list_messages()) == 60


async def test_claims_across_agents_are_exclusive(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        ids = []
        for i in range(40):
            row, _ = await a.insert_message(make_decision(call_id=f"c{i}"),
                                            state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
            ids.append(row.id)
        results = await asyncio.gather(
            *(s.claim_for_submit(i, now=T0) for i in ids for s in (a, b)))
        winners = [r for r in results if r is not None]
        assert sorted(r.id for r in winners) == sorted(ids)  # each row claimed exactly once
        assert all(r.attempts == 1 for r in winners)
        for i in ids:  # queued, then one "submitting" event
            assert [e.reason for e in await a.message_events(i)] == [None, "submitting"]
        # the claims that waited went together (group.py)
        assert a._claims is not None and a._claims.writes < a._claims.items == 40


async def test_an_agent_restarting_judges_only_its_own_interrupted_submits(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        mine, _ = await a.insert_message(make_decision(call_id="mine"),
                                         state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        peers, _ = await a.insert_message(make_decision(call_id="peer"),
                                          state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        assert await a.claim_for_submit(mine.id, now=T0) is not None
        assert await b.claim_for_submit(peers.id, now=T0) is not None
    # Agent a comes back while b is still submitting: only a's own submit is ambiguous.
    async with PostgresStore(pg_url, owner="a") as a2:
        recovered = await a2.recover_in_flight(now=T0 + timedelta(seconds=5))
        assert [r.id for r in recovered] == [mine.id]
        # b never came back: long after, its orphan is judged too.
        later = await a2.recover_in_flight(now=T0 + STALE_SUBMIT + timedelta(seconds=1))
        assert [r.id for r in later] == [peers.id]
        assert later[0].state is MessageState.AMBIGUOUS


async def test_receipts_reach_a_message_whichever_agent_gets_them(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        one, _ = await a.insert_message(make_decision(call_id="one"),
                                        state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        two, _ = await a.insert_message(make_decision(call_id="two"),
                                        state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        for row in (one, two):
            assert await a.claim_for_submit(row.id, now=T0) is not None
        await a.record_submit(one.id, gateway="smsc", smsc_ids=["s1"], now=T0,
                              hangup_to_submit_ms=5.0)
        # b holds the bind that receives the receipt for a's submit.
        out = await b.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                            smsc_id="s1"))
        assert out.changed and out.message is not None and out.message.id == one.id
        # A receipt that reaches b before a has recorded its submit waits, then applies.
        early = await b.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                              smsc_id="s2"))
        assert early.message is None
        done = await a.record_submit(two.id, gateway="smsc", smsc_ids=["s2"], now=T0,
                                     hangup_to_submit_ms=5.0)
        assert done is not None and done.state is MessageState.DELIVERED


async def test_writes_after_close_are_refused(pg_url: str) -> None:
    store = await PostgresStore(pg_url).open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.opt_out("+15551230000", source="t")


async def test_a_receipt_racing_the_submit_record_on_another_agent_is_never_stranded(
    pg_url: str, make_decision: MakeDecision
) -> None:
    """Agent a records submits while agent b, holding the bind, stores their receipts at the
    same moment: each receipt must end up on its message, whichever commits first."""
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        rows = []
        for i in range(60):
            row, _ = await a.insert_message(make_decision(call_id=f"c{i}"),
                                            state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
            assert await a.claim_for_submit(row.id, now=T0) is not None
            rows.append(row)

        async def submit(i: int) -> None:
            await a.record_submit(rows[i].id, gateway="smsc", smsc_ids=[f"s{i}"], now=T0,
                                  hangup_to_submit_ms=1.0)

        async def receipt(i: int) -> None:
            await b.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                          smsc_id=f"s{i}"))

        await asyncio.gather(*(f(i) for i in range(60) for f in (submit, receipt)))
        states = [(await a.get_message(r.id)).state for r in rows]  # type: ignore[union-attr]
        assert states == [MessageState.DELIVERED] * 60
        assert await a.receipts(unmatched=True) == []


async def test_a_call_judged_again_replaces_its_rule_outcomes(pg_url: str) -> None:
    from agent.models import RuleOutcome, Trigger

    async with PostgresStore(pg_url) as s:
        first = [RuleOutcome("a", False, "queue"), RuleOutcome("b", True),
                 RuleOutcome("c", False, "min_talk", ("caller",))]
        await s.record_rule_outcomes("1700.1", Trigger.CALL_COMPLETED, first, now=T0, pbx="default")
        assert await s.rule_outcomes("1700.1", pbx="default") == first
        again = [RuleOutcome("b", True)]
        await s.record_rule_outcomes("1700.1", Trigger.CALL_COMPLETED, again, now=T0, pbx="default")
        assert await s.rule_outcomes("1700.1", pbx="default") == again


@pytest.mark.parametrize("state", list(ReceiptState))
async def test_a_receipt_stored_before_its_submit_moves_the_message_as_one_after_it(
    pg_url: str, make_decision: MakeDecision, state: ReceiptState
) -> None:
    """The submit's record applies an earlier receipt in the database (functions.py); the
    message must end as ``agent.store.segments.RECEIPT_TARGET`` says, as if it came after."""
    async with PostgresStore(pg_url, owner="a") as a:
        before, _ = await a.insert_message(make_decision(call_id="early"),
                                           state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        after, _ = await a.insert_message(make_decision(call_id="late"),
                                          state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        for row, smsc_id in ((before, "e1"), (after, "l1")):
            assert await a.claim_for_submit(row.id, now=T0) is not None
        early = await a.apply_receipt(Receipt(gateway="smsc", state=state, smsc_id="e1"),
                                      now=T0)
        assert early.message is None
        got = await a.record_submit(before.id, gateway="smsc", smsc_ids=["e1"], now=T0,
                                    hangup_to_submit_ms=1.0)
        await a.record_submit(after.id, gateway="smsc", smsc_ids=["l1"], now=T0,
                              hangup_to_submit_ms=1.0)
        await a.apply_receipt(Receipt(gateway="smsc", state=state, smsc_id="l1"), now=T0)
        want = await a.get_message(after.id)
        assert got is not None and want is not None
        assert (got.state, got.reason, got.detail) == (
            want.state, want.reason, want.detail and want.detail.replace("l1", "e1"))
        assert got.state is RECEIPT_TARGET.get(state, MessageState.SUBMITTED)
        assert [r.message_id for r in await a.receipts(unmatched=False)
                if r.smsc_id == "e1"] == [before.id]


async def test_policy_reads_arriving_together_each_get_their_own_facts(
    pg_url: str, make_decision: MakeDecision
) -> None:
    async with PostgresStore(pg_url, owner="a") as a:
        numbers = [f"+9198100{i:05d}" for i in range(12)]
        await a.opt_out(numbers[1], source="t")
        await a.add_dnd([numbers[2]], source="t")
        sent, _ = await a.insert_message(make_decision(call_id="s", number=numbers[3]),
                                         state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        facts = await asyncio.gather(*(
            a.policy_facts(n, sent.rule, sent_since=T0 - timedelta(hours=1)) for n in numbers))
        assert [(f.opted_out, f.dnd, f.last_sent_at is not None, f.sent_to_number)
                for f in facts] == [(i == 1, i == 2, i == 3, int(i == 3)) for i in range(12)]
        assert a._facts is not None and a._facts.writes < 12


async def test_a_text_claimed_at_intake_is_claimed_by_the_agent_whose_insert_made_it(
    pg_url: str, make_decision: MakeDecision
) -> None:
    """``NewMessage.claim_via``: the record's one statement claims the first attempt; the other
    agent of the pair, recording the same call, gets the row as the first left it."""
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        d = make_decision(call_id="at-once")
        m = NewMessage(d, MessageState.QUEUED, next_attempt_at=T0, claim_via=d.gateway)
        [(row, created)] = await a.record_call(None, [m], now=T0)
        assert created and row.attempts == 1 and row.submitting_since == T0
        assert [(e.state, e.reason) for e in await a.message_events(row.id)] == [
            (MessageState.QUEUED, None), (MessageState.QUEUED, "submitting")]
        [(same, created)] = await b.record_call(None, [m], now=T0)
        assert not created and same.id == row.id and same.attempts == 1
        assert await b.claim_for_submit(row.id, now=T0) is None  # a's claim holds
        # bound for another gateway than the one named: queued unclaimed, as claim_for_submit
        other = NewMessage(make_decision(call_id="elsewhere"), MessageState.QUEUED,
                           next_attempt_at=T0, claim_via="backup")
        [(left, _)] = await a.record_call(None, [other], now=T0)
        assert left.submitting_since is None and left.attempts == 0
