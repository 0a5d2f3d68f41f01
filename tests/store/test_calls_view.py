"""The calls view's store methods: rule outcomes kept per trigger, calls found by filters and by
number, and the history of the opt-out and DND lists."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.models import (
    CallRecord,
    Disposition,
    MessageState,
    RuleOutcome,
    Trigger,
)
from agent.store.base import CallFilter, NewMessage
from agent.store.migrations import MIGRATIONS
from agent.store.sqlite import SqliteStore
from tests.store.conftest import MakeDecision

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def _call(i: int, **kw: object) -> CallRecord:
    base = dict(call_id=f"1714554000.{i}", caller=f"+9198110{i:05d}", queue="Support",
                agent="2001", disposition=Disposition.ANSWERED, ended_at=T0 + timedelta(minutes=i))
    base.update(kw)
    return CallRecord(**base)  # type: ignore[arg-type]


async def test_rule_outcomes_are_replaced_per_trigger(store: SqliteStore) -> None:
    cid = "1714554000.1"
    connected = [RuleOutcome("agent-summary", True)]
    await store.record_rule_outcomes(cid, Trigger.CALL_CONNECTED, connected, now=T0, pbx="default")
    first = [RuleOutcome("support", False, "talk time 3s is under min_talk 60s"),
             RuleOutcome("sorry", True, None, ("agent: already taken by rule 'x'",))]
    await store.record_rule_outcomes(cid, Trigger.CALL_COMPLETED, first, now=T0, pbx="default")
    # A retried record is judged again: its outcomes replace the earlier ones whole.
    again = [RuleOutcome("support", False, "queue is 'Sales', rule wants one of ['Support']")]
    await store.record_rule_outcomes(cid, Trigger.CALL_COMPLETED, again, now=T0, pbx="default")
    got = await store.rule_outcomes(cid, pbx="default")
    assert [(o.rule, o.trigger, o.matched, o.reason) for o in got] == [
        ("agent-summary", Trigger.CALL_CONNECTED, True, None),
        ("support", Trigger.CALL_COMPLETED, False,
         "queue is 'Sales', rule wants one of ['Support']"),
    ]


async def test_list_calls_filters_and_number_search(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    for i in range(1, 6):
        await store.save_call(_call(i, agent="2002" if i % 2 else "2001",
                                    disposition=Disposition.MISSED if i == 3 else
                                    Disposition.ANSWERED))
    # Call 4 texted its agent's mobile: searching that number finds the call too.
    agent_mobile = "+919812345678"
    await store.insert_message(make_decision(call_id="1714554000.4", number=agent_mobile,
                                             rule="agent-summary"),
                               state=MessageState.SUPPRESSED, now=T0, reason="dnd")
    newest_first = await store.list_calls(CallFilter())
    assert [c.record.call_id for c in newest_first] == [f"1714554000.{i}" for i in (5, 4, 3, 2, 1)]
    assert newest_first[1].messages == (("agent-summary", MessageState.SUPPRESSED, "dnd"),)
    assert [c.record.call_id for c in await store.list_calls(CallFilter(agent="2001"))] == [
        "1714554000.4", "1714554000.2"]
    assert [c.record.call_id for c in await store.list_calls(
        CallFilter(disposition="missed"))] == ["1714554000.3"]
    window = CallFilter(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert [c.record.call_id for c in await store.list_calls(window)] == [
        "1714554000.3", "1714554000.2"]
    by_caller = await store.list_calls(CallFilter(number="+919811000002"))
    assert [c.record.call_id for c in by_caller] == ["1714554000.2"]
    by_texted = await store.list_calls(CallFilter(number=agent_mobile))
    assert [c.record.call_id for c in by_texted] == ["1714554000.4"]
    by_tail = await store.list_calls(CallFilter(number="00005"))
    assert [c.record.call_id for c in by_tail] == ["1714554000.5"]
    await store.save_call(_call(9, pbx="site-b"))
    (other,) = await store.list_calls(CallFilter(pbx="site-b"))
    assert other.record.call_id == "1714554000.9" and other.pbx == "site-b"
    assert len(await store.list_calls(CallFilter(pbx="default"))) == 5
    page = await store.list_calls(CallFilter(limit=2, offset=3))
    assert [c.record.call_id for c in page] == ["1714554000.3", "1714554000.2"]


async def test_list_changes_are_recorded_with_who_and_when(store: SqliteStore) -> None:
    n = "+919812345678"
    await store.opt_out(n, source="reply:smsc:STOP")
    assert await store.opt_in(n, source="dashboard:asha")
    assert not await store.opt_in(n, source="dashboard:asha")  # nothing removed, nothing logged
    await store.add_dnd([n], source="cli")
    assert await store.remove_dnd(n, source="cli")
    history = await store.list_history(n)
    assert [(e.list, e.action, e.who) for e in history] == [
        ("dnd", "remove", "cli"), ("dnd", "add", "cli"),
        ("optout", "remove", "dashboard:asha"), ("optout", "add", "reply:smsc:STOP")]
    assert all(e.at.tzinfo is not None for e in history)
    await store.add_dnd(["+15550000001"], source="csv:dnd.csv")
    assert [e.number for e in await store.list_numbers("dnd")] == ["+15550000001"]


async def test_a_version_1_database_is_migrated_with_its_calls(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    rec = _call(7, agent="2009")
    import json
    conn.execute("INSERT INTO calls (call_id, record, trigger, disposition, queue, caller,"
                 " ended_at, created_at) VALUES (?,?,?,?,?,?,?,?)",
                 (rec.call_id, json.dumps(rec.to_dict()), "call_completed", "answered",
                  "Support", rec.caller, "2024-05-01T09:07:00.000000Z",
                  "2024-05-01T09:07:00.000000Z"))
    conn.commit()
    conn.close()
    async with SqliteStore(path) as store:
        found = await store.list_calls(CallFilter(agent="2009"))
        assert [c.record.call_id for c in found] == [rec.call_id]


async def test_record_call_writes_the_rules_outcomes_in_its_own_transaction(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    """A record is one commit: the call, its rows and what each rule said, together; a record
    judged again replaces its outcomes for that trigger, like ``record_rule_outcomes``."""
    call = _call(7)
    d = make_decision(call_id=call.call_id, rule="support")
    first = [RuleOutcome("support", True), RuleOutcome("sorry", False, "disposition is answered")]
    commits = getattr(store, "commits", None)
    [(row, created)] = await store.record_call(
        call, [NewMessage(d, MessageState.QUEUED, next_attempt_at=T0)], now=T0, outcomes=first)
    assert created and row.call_id == call.call_id
    if commits is not None:
        assert store.commits == commits + 1  # type: ignore[attr-defined]
    assert [(o.rule, o.matched, o.reason) for o in await store.rule_outcomes(call.call_id, pbx="default")] == [
        ("support", True, None), ("sorry", False, "disposition is answered")]
    again = [RuleOutcome("support", False, "talk time 3s is under min_talk 60s")]
    await store.record_call(call, [], now=T0, outcomes=again)
    assert [(o.rule, o.matched) for o in await store.rule_outcomes(call.call_id, pbx="default")] == [
        ("support", False)]
