"""The store against real SQLite files and (tests taking ``store`` or ``open_store``) a real
PostgreSQL: schema, idempotency, receipts, grouping, failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.models import (
    CallRecord,
    Decision,
    Disposition,
    InboundSms,
    MessageState,
    Receipt,
    ReceiptState,
    Trigger,
)
from agent.store.base import FactsAsk, MessageFilter, MessageRow, NewMessage
from agent.store.packing import micros
from agent.store.migrations import LATEST_VERSION
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.records import read_facts

MakeDecision = Callable[..., Decision]

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


async def queued(store: SqliteStore, make_decision: MakeDecision, **changes: object) -> MessageRow:
    row, created = await store.insert_message(
        make_decision(**changes),
        state=MessageState.QUEUED,
        now=T0,
        next_attempt_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    assert created
    return row


async def submitted(
    store: SqliteStore, make_decision: MakeDecision, ids: list[str], **changes: object
) -> MessageRow:
    row = await queued(store, make_decision, **changes)
    assert await store.claim_for_submit(row.id, now=T0) is not None
    out = await store.record_submit(
        row.id, gateway="smsc", smsc_ids=ids, now=T0, hangup_to_submit_ms=12.5
    )
    assert out is not None and out.state is MessageState.SUBMITTED
    return out


# ---- schema -----------------------------------------------------------------------------------


async def test_fresh_file_is_migrated_to_latest_in_wal_mode(db_path: Path) -> None:
    async with SqliteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {
        "calls",
        "messages",
        "message_history",
        "receipts",
        "opt_outs",
        "dnd",
        "links",
        "clicks",
        "replies",
    } <= tables


async def test_reopening_keeps_data(open_store: Callable[[], SqliteStore],
                                    make_decision: MakeDecision) -> None:
    async with open_store() as s:
        row = await queued(s, make_decision)
    async with open_store() as s:
        again = await s.get_message(row.id)
    assert again == row


async def test_newer_schema_is_refused_naming_file_and_versions(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError) as info:
        await SqliteStore(db_path).open()
    text = str(info.value)
    assert str(db_path) in text and "99" in text and f"version {LATEST_VERSION}" in text


# ---- calls and messages ------------------------------------------------------------------------


async def test_call_record_round_trips(store: SqliteStore) -> None:
    record = CallRecord(
        call_id="1700.9",
        caller="+919812345678",
        queue="Support",
        disposition=Disposition.ANSWERED,
        ended_at=T0,
        tags=("vip",),
        vars={"TICKET": "42"},
    )
    await store.save_call(record)
    await store.save_call(record)  # the same call saved twice is an update, not an error
    assert await store.get_call("1700.9", pbx="default") == record
    assert await store.get_call("nope", pbx="default") is None


async def test_a_connected_only_call_starts_the_gap_at_its_store_time(store: SqliteStore) -> None:
    # kill -9 after the on-connect SMS: reconciliation must look back to that call.
    assert await store.newest_call_end() is None
    await store.save_call(CallRecord(call_id="1700.8", trigger=Trigger.CALL_CONNECTED), now=T0)
    assert await store.newest_call_end() == T0
    await store.save_call(CallRecord(call_id="1700.7", ended_at=T0 - timedelta(hours=1)))
    assert await store.newest_call_end() == T0


async def test_second_insert_with_same_key_returns_existing_row(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    d = make_decision()
    first, created1 = await store.insert_message(
        d, state=MessageState.QUEUED, now=T0, next_attempt_at=T0
    )
    second, created2 = await store.insert_message(
        d, state=MessageState.SUPPRESSED, now=T0, reason="cooldown"
    )
    assert (created1, created2) == (True, False)
    assert second == first and second.state is MessageState.QUEUED


async def test_concurrent_inserts_of_one_key_create_one_row(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    d = make_decision()
    results = await asyncio.gather(
        *(
            store.insert_message(d, state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
            for _ in range(20)
        )
    )
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1
    assert len(await store.list_messages()) == 1


async def test_transition_records_event_and_honours_from_states(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await queued(store, make_decision)
    assert (
        await store.transition(
            row.id,
            MessageState.FAILED,
            now=T0,
            reason="rejected",
            from_states={MessageState.SUBMITTED},
        )
        is None
    )
    failed = await store.transition(
        row.id,
        MessageState.FAILED,
        now=T0,
        reason="rejected",
        detail="invalid destination",
        error_code="11",
        from_states={MessageState.QUEUED},
    )
    assert failed is not None and failed.state is MessageState.FAILED
    assert failed.final_at == T0 and failed.error_code == "11"
    events = await store.message_events(row.id)
    assert [(e.state, e.reason) for e in events] == [
        (MessageState.QUEUED, None),
        (MessageState.FAILED, "rejected"),
    ]
    with pytest.raises(ValueError, match="unknown message fields"):
        await store.transition(row.id, MessageState.FAILED, now=T0, idempotency_key="x")


async def test_a_claim_from_a_stale_read_cannot_undo_a_failover(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await queued(store, make_decision)
    assert row.gateway == "smsc"
    await store.transition(
        row.id, MessageState.QUEUED, now=T0, reason="failover", gateway="kannel",
        from_states={MessageState.QUEUED},
    )
    assert await store.claim_for_submit(row.id, now=T0, gateway="smsc") is None
    claimed = await store.claim_for_submit(row.id, now=T0, gateway="kannel")
    assert claimed is not None and claimed.gateway == "kannel" and claimed.attempts == 1


async def test_claim_is_exclusive_and_recovery_makes_in_flight_ambiguous(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await queued(store, make_decision)
    claimed = await store.claim_for_submit(row.id, now=T0)
    assert claimed is not None and claimed.attempts == 1 and claimed.submitting_since == T0
    assert await store.claim_for_submit(row.id, now=T0) is None
    assert await store.due_messages(T0 + timedelta(hours=1), 10) == []
    recovered = await store.recover_in_flight(now=T0)
    assert [r.id for r in recovered] == [row.id]
    assert recovered[0].state is MessageState.AMBIGUOUS and recovered[0].submitting_since is None
    assert await store.recover_in_flight(now=T0) == []


async def test_due_messages_covers_queued_and_deferred_by_time(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    now_row = await queued(store, make_decision, call_id="a")
    later, _ = await store.insert_message(
        make_decision(call_id="b"),
        state=MessageState.DEFERRED,
        now=T0,
        next_attempt_at=T0 + timedelta(hours=2),
    )
    await store.insert_message(
        make_decision(call_id="c"), state=MessageState.SUPPRESSED, now=T0, reason="opt_out"
    )
    assert [r.id for r in await store.due_messages(T0, 10)] == [now_row.id]
    assert {r.id for r in await store.due_messages(T0 + timedelta(hours=3), 10)} == {
        now_row.id,
        later.id,
    }
    assert await store.next_due_at() == T0
    assert [r.id for r in await store.messages_in_state(MessageState.DEFERRED)] == [later.id]


# ---- receipts -----------------------------------------------------------------------------------


def dlr(smsc_id: str | None, state: ReceiptState, **kw: object) -> Receipt:
    return Receipt(gateway="smsc", state=state, smsc_id=smsc_id, **kw)  # type: ignore[arg-type]


async def test_receipt_for_any_segment_id_finds_the_message(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await submitted(store, make_decision, ["s1", "s2", "s3"])
    assert (await store.find_by_smsc_id("smsc", "s2")).id == row.id  # type: ignore[union-attr]
    assert await store.find_by_smsc_id("other-gateway", "s2") is None
    out = await store.apply_receipt(dlr("s3", ReceiptState.DELIVERED))
    # One part delivered is not the message delivered: it waits for the other two.
    assert not out.changed and out.message is not None and out.message.id == row.id
    assert out.message.state is MessageState.SUBMITTED
    await store.apply_receipt(dlr("s1", ReceiptState.DELIVERED))
    out = await store.apply_receipt(dlr("s2", ReceiptState.DELIVERED))
    assert out.changed and out.message is not None and out.message.state is MessageState.DELIVERED
    assert out.message.detail == "smsc receipts: 3 of 3 parts delivered"


async def test_receipt_by_our_message_id(store: SqliteStore, make_decision: MakeDecision) -> None:
    row = await submitted(store, make_decision, ["x"])
    out = await store.apply_receipt(
        Receipt(gateway="kannel", state=ReceiptState.UNDELIVERED, message_id=row.id, error_code="1")
    )
    assert out.message is not None and out.message.state is MessageState.UNDELIVERED
    assert out.message.error_code == "1"


async def test_duplicate_receipt_is_idempotent(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await submitted(store, make_decision, ["s1"])
    r = dlr("s1", ReceiptState.DELIVERED, done_at=T0)
    first = await store.apply_receipt(r)
    dup = await store.apply_receipt(r)
    assert first.changed and not first.duplicate
    assert dup.duplicate and not dup.changed and dup.receipt_id is None
    assert len(await store.receipts(message_id=row.id)) == 1
    events = await store.message_events(row.id)
    assert sum(e.state is MessageState.DELIVERED for e in events) == 1


async def test_intermediate_receipt_never_overwrites_final(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await submitted(store, make_decision, ["s1"])
    await store.apply_receipt(dlr("s1", ReceiptState.DELIVERED))
    late = await store.apply_receipt(dlr("s1", ReceiptState.ACCEPTED))
    assert not late.changed
    assert (await store.get_message(row.id)).state is MessageState.DELIVERED  # type: ignore[union-attr]
    assert len(await store.receipts(message_id=row.id)) == 2  # still kept for the audit trail


async def test_final_receipt_is_not_replaced_by_another_for_same_segment(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await submitted(store, make_decision, ["s1"])
    await store.apply_receipt(dlr("s1", ReceiptState.DELIVERED))
    out = await store.apply_receipt(dlr("s1", ReceiptState.UNDELIVERED))
    assert not out.changed
    assert (await store.get_message(row.id)).state is MessageState.DELIVERED  # type: ignore[union-attr]


async def test_a_lost_part_makes_the_message_partially_delivered(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await submitted(store, make_decision, ["s1", "s2", "s3"])
    await store.apply_receipt(dlr("s1", ReceiptState.DELIVERED))
    await store.apply_receipt(dlr("s2", ReceiptState.UNDELIVERED, error_code="27"))
    out = await store.apply_receipt(dlr("s3", ReceiptState.DELIVERED))
    assert out.changed and out.message is not None and out.message.id == row.id
    assert out.message.state is MessageState.PARTIALLY_DELIVERED
    assert out.message.state.final and out.message.error_code == "27"
    back = await store.apply_receipt(dlr("s2", ReceiptState.DELIVERED))
    assert not back.changed  # a part's first final receipt is its outcome


async def test_no_part_delivered_is_the_worst_failure(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    await submitted(store, make_decision, ["s1", "s2"])
    await store.apply_receipt(dlr("s1", ReceiptState.EXPIRED))
    out = await store.apply_receipt(dlr("s2", ReceiptState.UNDELIVERED))
    assert out.message is not None and out.message.state is MessageState.UNDELIVERED


async def test_unknown_receipt_is_stored_unmatched(store: SqliteStore) -> None:
    out = await store.apply_receipt(
        dlr("nobody", ReceiptState.DELIVERED, raw="id:nobody stat:DELIVRD")
    )
    assert out.message is None and out.receipt_id is not None and not out.changed
    [kept] = await store.receipts(unmatched=True)
    assert kept.smsc_id == "nobody" and kept.raw == "id:nobody stat:DELIVRD"


async def test_receipt_racing_ahead_of_submit_response_is_applied_when_submit_recorded(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await queued(store, make_decision)
    await store.claim_for_submit(row.id, now=T0)
    early = await store.apply_receipt(dlr("fast-1", ReceiptState.DELIVERED))
    assert early.message is None
    after = await store.record_submit(
        row.id, gateway="smsc", smsc_ids=["fast-1"], now=T0, hangup_to_submit_ms=None
    )
    assert after is not None and after.state is MessageState.DELIVERED
    assert await store.receipts(unmatched=True) == []


async def test_late_submit_result_does_not_undo_a_receipt(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await queued(store, make_decision)
    await store.claim_for_submit(row.id, now=T0)
    # An HTTP gateway's callback carries our id and can arrive before its own response does.
    await store.apply_receipt(
        Receipt(gateway="kannel", state=ReceiptState.DELIVERED, message_id=row.id)
    )
    after = await store.record_submit(
        row.id, gateway="kannel", smsc_ids=["k1"], now=T0, hangup_to_submit_ms=None
    )
    assert after is not None and after.state is MessageState.DELIVERED
    assert after.smsc_ids == ("k1",) and after.submitting_since is None


# ---- policy facts -------------------------------------------------------------------------------


async def test_sent_counts_ignore_suppressed_and_count_pending(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    n = "+919812345678"
    await submitted(store, make_decision, ["a"], call_id="c1")
    await queued(store, make_decision, call_id="c2", rule="other")
    await store.insert_message(
        make_decision(call_id="c3"), state=MessageState.SUPPRESSED, now=T0, reason="opt_out"
    )
    await queued(store, make_decision, call_id="c4", number="+15551234567")
    assert await store.last_sent_at(n, "support-followup") == T0
    assert await store.last_sent_at(n, "nope") is None
    assert await store.count_sent_since(n, T0) == 2
    assert await store.count_sent_since(None, T0) == 3
    assert await store.count_sent_since(n, T0 + timedelta(seconds=1)) == 0
    facts = await store.policy_facts(n, "support-followup")
    assert facts.last_sent_at == T0
    assert not facts.opted_out and not facts.dnd
    sent = await store.sent_since(T0)
    assert sorted((k, num) for k, num, _ in sent) == [
        ("caller", "+15551234567"), ("caller", n), ("caller", n)]
    assert await store.sent_since(T0 + timedelta(seconds=1)) == []


async def test_opt_out_and_back_in(store: SqliteStore) -> None:
    n = "+919812345678"
    await store.opt_out(n, source="reply:STOP")
    await store.opt_out(n, source="reply:STOP")
    assert await store.is_opted_out(n)
    assert (await store.policy_facts(n, "r")).opted_out
    assert await store.opt_in(n) is True
    assert await store.opt_in(n) is False
    assert not await store.is_opted_out(n)


async def test_dnd_csv_import_reports_bad_lines(store: SqliteStore, tmp_path: Path) -> None:
    csv_file = tmp_path / "dnd.csv"
    csv_file.write_text(
        "number,registered\n9812345678,2023\n+44 20 7946 0958,x\n\n# note\n"
        "hello1,\n98123456789012345678,\n"
    )
    result = await store.import_dnd_csv(csv_file, region="IN")
    assert result.imported == 2
    assert result.problems == (
        f"{csv_file}:6: not a phone number",
        f"{csv_file}:7: not a phone number",
    )
    assert await store.is_dnd("+919812345678") and await store.is_dnd("+442079460958")
    assert await store.remove_dnd("+442079460958") and not await store.is_dnd("+442079460958")


async def test_missing_csv_is_a_store_error_naming_it(store: SqliteStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nope.csv"):
        await store.import_dnd_csv(tmp_path / "nope.csv")


# ---- replies, links, log ------------------------------------------------------------------------


async def test_links_clicks_replies_and_latest_message(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await submitted(store, make_decision, ["s1"])
    await store.add_link("Ab3x", "https://help.acme.in/t/42", message_id=row.id)
    link = await store.resolve_link("Ab3x")
    assert (
        link is not None and link.url == "https://help.acme.in/t/42" and link.message_id == row.id
    )
    assert await store.resolve_link("zzzz") is None
    await store.add_click("Ab3x", user_agent="Mozilla/5.0")
    latest = await store.latest_message_to("+919812345678")
    assert latest is not None and latest.id == row.id
    sms = InboundSms(
        gateway="smsc", sender="+919812345678", recipient="ACMECO", text="STOP", received_at=T0
    )
    reply_id = await store.add_reply(sms, message_id=row.id, keyword="STOP", action="opt_out")
    assert reply_id >= 1
    with pytest.raises(StoreError):  # a second link with the same code is refused, loudly
        await store.add_link("Ab3x", "https://elsewhere", message_id=None)
    # a link naming no message that is there is refused by both stores, and not stored
    with pytest.raises(StoreError, match="link Cd4y: no message nosuch"):
        await store.add_link("Cd4y", "https://elsewhere", message_id="nosuch")
    assert await store.resolve_link("Cd4y") is None
    assert store.healthy  # a refused op is not a sick database


async def test_list_messages_filters(store: SqliteStore, make_decision: MakeDecision) -> None:
    a = await queued(store, make_decision, call_id="a")
    b, _ = await store.insert_message(
        make_decision(call_id="b", rule="missed"),
        state=MessageState.SUPPRESSED,
        now=T0 + timedelta(minutes=1),
        reason="dnd",
    )
    assert [m.id for m in await store.list_messages()] == [b.id, a.id]
    assert [m.id for m in await store.list_messages(MessageFilter(rule="missed"))] == [b.id]
    assert [
        m.id for m in await store.list_messages(MessageFilter(states={MessageState.QUEUED}))
    ] == [a.id]
    assert [
        m.id for m in await store.list_messages(MessageFilter(since=T0 + timedelta(seconds=30)))
    ] == [b.id]
    assert [
        m.id for m in await store.list_messages(MessageFilter(newest_first=False, limit=1))
    ] == [a.id]


# ---- the writer ---------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # the SQLite writer's grouping
async def test_concurrent_writes_are_grouped_into_few_commits(store: SqliteStore) -> None:
    before = store.commits
    await asyncio.gather(*(store.opt_out(f"+1555000{i:04d}", source="t") for i in range(300)))
    commits = store.commits - before
    assert commits <= 10, commits
    assert store.ops_written >= 300
    assert await store.is_opted_out("+15550000299")


async def test_locked_database_raises_store_error_then_recovers(db_path: Path) -> None:
    async with SqliteStore(db_path, busy_timeout_ms=50) as store:
        assert await store.health()
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreError) as info:
                await store.opt_out("+15551230000", source="t")
            assert str(db_path) in str(info.value) and "locked" in str(info.value)
            assert not store.healthy
            assert store.last_error is not None and "SQLITE_BUSY" in store.last_error
            assert not await store.health()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.health()
        assert store.healthy
        await store.opt_out("+15551230000", source="t")
        assert await store.is_opted_out("+15551230000")


async def test_full_disk_raises_store_error_then_recovers(
    db_path: Path, make_decision: MakeDecision
) -> None:
    async with SqliteStore(db_path) as store:
        # simulating ENOSPC: cap the file size of the writer's connection
        pages = await store._write_now(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store._write_now(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        big = "x" * 50_000
        with pytest.raises(StoreError, match="full"):
            await store.insert_message(make_decision(text=big), state=MessageState.QUEUED, now=T0)
        assert not store.healthy and "SQLITE_FULL" in (store.last_error or "")
        await store._write_now(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        _, created = await store.insert_message(
            make_decision(text=big), state=MessageState.QUEUED, now=T0
        )
        assert created and store.healthy


async def test_writes_after_close_are_refused(db_path: Path) -> None:
    store = await SqliteStore(db_path).open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.opt_out("+15551230000", source="t")


async def test_claim_refuses_a_row_whose_retry_is_not_due(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    row = await queued(store, make_decision)
    await store.claim_for_submit(row.id, now=T0)
    later = T0 + timedelta(seconds=30)
    await store.transition(
        row.id,
        MessageState.QUEUED,
        now=T0,
        reason="retry",
        next_attempt_at=later,
        submitting_since=None,
    )
    assert await store.claim_for_submit(row.id, now=T0 + timedelta(seconds=1)) is None
    again = await store.claim_for_submit(row.id, now=later)
    assert again is not None and again.attempts == 2


async def test_a_refused_op_in_a_group_fails_alone(store: SqliteStore) -> None:
    results = await asyncio.gather(
        *(store.add_link("same", f"https://x/{i}", message_id=None) for i in range(5)),
        store.opt_out("+15559990000", source="t"),
        return_exceptions=True,
    )
    assert sum(r is None for r in results[:5]) == 1
    assert all(isinstance(r, StoreError) for r in results[:5] if r is not None)
    assert results[5] is None and await store.is_opted_out("+15559990000")
    assert store.healthy


async def test_webhook_nonces_are_claimed_once_until_they_expire(store: SqliteStore) -> None:
    assert await store.claim_nonce("gw:n1", now=T0, ttl=60)
    assert not await store.claim_nonce("gw:n1", now=T0 + timedelta(seconds=30), ttl=60)
    assert await store.claim_nonce("gw:n1", now=T0 + timedelta(seconds=61), ttl=60)
    await store.forget_nonce("gw:n1")
    assert await store.claim_nonce("gw:n1", now=T0 + timedelta(seconds=62), ttl=60)


async def test_receipts_from_a_leaked_url_can_not_pile_up(
    store: SqliteStore, make_decision: MakeDecision, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct forged receipts (issue #19, finding 10): bounded per message, and the unmatched
    ones of a gateway are pruned to the newest."""
    from agent.store.postgres import receipts as pg_receipts
    from agent.store.sqlite import receipts as sq_receipts

    for mod in (sq_receipts, pg_receipts):
        monkeypatch.setattr(mod, "MAX_RECEIPTS_PER_MESSAGE", 5)
        monkeypatch.setattr(mod, "MAX_UNMATCHED_RECEIPTS", 10)
    row = await submitted(store, make_decision, ["s-1"])
    for i in range(12):
        await store.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.ACCEPTED,
                                          message_id=row.id, error_code=str(i)), now=T0)
    assert len(await store.receipts(message_id=row.id)) == 5
    for i in range(200):
        await store.apply_receipt(Receipt(gateway="kannel", state=ReceiptState.DELIVERED,
                                          message_id="gone", smsc_id=f"x{i}"), now=T0)
    left = await store.receipts(unmatched=True)
    assert 10 <= len(left) < 10 + 64
    assert left[-1].smsc_id == "x199"  # the newest are kept


async def test_the_policy_read_costs_the_same_whatever_the_numbers_history(
    db_path: Path, make_decision: MakeDecision
) -> None:
    """Before each text the policy read asks a number's last send for the rule (cooldown) and
    its texts inside the per-number window. An agent texted a summary per call has thousands
    of rows by the hour: the read must seek them, not visit each one (it was 11 ms per
    decision at 1,159 rows, growing with every call). Counted in sqlite's VM steps of the
    store's own statement (records.read_facts, as either connection runs it)."""
    n = "+919812345678"
    ask = FactsAsk(n, "support-followup", T0 + timedelta(days=3, hours=-1), False)

    def cost() -> int:
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        with closing(sqlite3.connect(db_path)) as conn:
            conn.set_progress_handler(count, 1)
            facts = read_facts(conn, ask)
        assert facts.last_sent_at == T0 + timedelta(days=3)
        assert facts.sent_to_number == 1
        return steps

    async with SqliteStore(db_path) as store:
        first = await submitted(store, make_decision, ["a"], call_id="c0")
        await store.insert_message(make_decision(call_id="c1"), state=MessageState.QUEUED,
                                   now=T0 + timedelta(days=3),
                                   next_attempt_at=T0 + timedelta(days=3))
    short = cost()
    # 3,000 older texts to the same number, of the same rule and of another, as the agent's
    # own rows would be (copies of the first, days before the window)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        for i in range(3000):
            conn.execute(
                "INSERT INTO messages SELECT id || ?, idem + ?, call_id, ?, trigger,"
                " recipient_kind, number, template, gateway, sender_id, text, encoding, segments,"
                " category, dlt_template_id, dlt_entity_id, state, reason, detail, attempts,"
                " smsc_ids, error_code, created_at, queued_at, ?, final_at, next_attempt_at,"
                " submitting_since, expires_at, call_ended_at, hangup_to_submit_ms, pbx,"
                " NULL FROM messages WHERE id = ?",
                (f"-{i}", i + 1, "support-followup" if i % 2 else "other",
                 micros(T0 + timedelta(minutes=i)), first.id))
    long = cost()
    assert long < short * 1.5 + 50, (short, long)


async def test_a_text_claimed_at_intake_is_written_claimed_in_one_statement(
        store: SqliteStore, make_decision: MakeDecision, monkeypatch: pytest.MonkeyPatch) -> None:
    """``NewMessage.claim_via``: the row is written already claimed for its first attempt (both
    events in its history), not written and then updated; a replay of the record finds it as
    claimed; one for another gateway, or not yet due, is left unclaimed (the claim would not
    take it)."""
    statements: list[str] = []
    if isinstance(store, SqliteStore):
        from agent.store.sqlite import intake

        write = intake.write_record

        def traced(conn: sqlite3.Connection, *a: object) -> object:
            conn.set_trace_callback(statements.append)
            try:
                return write(conn, *a)  # type: ignore[arg-type]
            finally:
                conn.set_trace_callback(None)

        monkeypatch.setattr(intake, "write_record", traced)
    d = make_decision(call_id="at-once")
    m = NewMessage(d, MessageState.QUEUED, next_attempt_at=T0, claim_via=d.gateway)
    [(row, created)] = await store.record_call(None, [m], now=T0)
    assert created and row.attempts == 1 and row.submitting_since == T0
    assert [(e.state, e.reason, e.detail) for e in await store.message_events(row.id)] == [
        (MessageState.QUEUED, None, None),
        (MessageState.QUEUED, "submitting", f"attempt 1 via {d.gateway}")]
    assert await store.get_message(row.id) == row
    if isinstance(store, SqliteStore):
        writes = [s.split()[0:3] for s in statements if not s.startswith("SELECT")]
        assert not [w for w in writes if w[:2] == ["UPDATE", "messages"]], statements
        assert sum("message_history" in s for s in statements) == 1, statements
    [(same, created)] = await store.record_call(None, [m], now=T0)
    assert not created and same == row
    assert await store.claim_for_submit(row.id, now=T0) is None  # already claimed
    for other in (NewMessage(make_decision(call_id="elsewhere"), MessageState.QUEUED,
                             next_attempt_at=T0, claim_via="backup"),
                  NewMessage(make_decision(call_id="later"), MessageState.QUEUED,
                             next_attempt_at=T0 + timedelta(minutes=5), claim_via=d.gateway)):
        [(left, created)] = await store.record_call(None, [other], now=T0)
        assert created and left.submitting_since is None and left.attempts == 0
        assert [e.reason for e in await store.message_events(left.id)] == [None]
