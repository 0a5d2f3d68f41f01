"""The policies decide a record inside the store's write (``Outbox.decide_and_record``): on
SQLite the facts are read in the writer thread, in the transaction that writes the rows, with
no read hop before it. What that must keep: every fact committed (or queued) before the record
counts, no call is texted twice, and the window slots taken for texts that could go at once
are given back when the policies stop them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from agent.dispatch import Dispatcher
from agent.models import MessageState, OutboundSms, SubmitResult
from agent.sms.policy import Limits
from agent.store.base import MessageFilter
from agent.store.seams import Store
from agent.store.sqlite import SqliteStore

from test_dispatch import FakeGateway, MakeDecision, dispatcher, running, wait_state

__all__ = ["running"]  # the fixture, shared with test_dispatch


async def test_an_opt_out_committed_just_before_the_record_is_honoured(
    store: Store, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    d = dispatcher(store, gw)
    running(d)
    await store.opt_out("+15550000001", source="reply:STOP")
    [row] = await d.handle([make_decision(number="+15550000001")])
    assert (row.state, row.reason) == (MessageState.SUPPRESSED, "opt_out")
    assert await d.settle(5.0) == 0
    assert gw.calls == []


@pytest.mark.sqlite_only  # the writer thread's order: ops run as they were queued
async def test_an_opt_out_still_being_written_when_the_record_comes_is_honoured(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """The STOP's write is queued, not yet committed, when the record is decided: a read on
    the read connection would not see it; the decision in the writer's transaction does."""
    gw = FakeGateway("smsc")
    d = dispatcher(store, gw)
    running(d)
    _, [row] = await asyncio.gather(
        store.opt_out("+15550000001", source="reply:STOP"),
        d.handle([make_decision(number="+15550000001")]))
    assert (row.state, row.reason) == (MessageState.SUPPRESSED, "opt_out")
    assert gw.calls == []


async def test_a_call_decided_twice_at_once_is_texted_once_and_counted_once(
    store: Store, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    d = dispatcher(store, gw, limits=Limits.parse(per_number="2/1h"))
    running(d)
    first, second = await asyncio.gather(d.handle([make_decision(call_id="a")]),
                                         d.handle([make_decision(call_id="a")]))
    assert first[0].id == second[0].id
    [again] = await d.handle([make_decision(call_id="a")])  # a replay, later
    assert again.id == first[0].id
    await wait_state(store, first[0].id, MessageState.SUBMITTED)
    # The duplicates were not counted: one text to the number so far, a second may go.
    [other] = await d.handle([make_decision(call_id="b", rule="other")])
    assert other.state is MessageState.QUEUED
    [third] = await d.handle([make_decision(call_id="c", rule="third")])
    assert (third.state, third.reason) == (MessageState.SUPPRESSED, "rate_limited")
    await wait_state(store, other.id, MessageState.SUBMITTED)
    assert sorted(s.message_id for s in gw.accepted) == sorted([first[0].id, other.id])


@pytest.mark.sqlite_only  # PostgreSQL's agents decide on what was committed when they read
async def test_two_calls_from_one_number_decided_at_once_respect_the_cooldown(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    d = dispatcher(store, gw)
    running(d)
    a, b = await asyncio.gather(d.handle([make_decision(call_id="a", cooldown_seconds=3600)]),
                                d.handle([make_decision(call_id="b", cooldown_seconds=3600)]))
    assert sorted((r.state, r.reason) for r in (*a, *b)) == [
        (MessageState.QUEUED, None), (MessageState.SUPPRESSED, "cooldown")]


async def test_a_slot_taken_for_a_text_the_policies_stop_goes_to_the_next_text(
    store: Store, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """A window of one: the record's first decision (opted out) had the slot when the record
    was sent to the store; the text that does go gets it, and it is free again afterwards."""
    gw = FakeGateway("smsc", window=1)
    d = dispatcher(store, gw)
    running(d)
    await asyncio.wait_for(d.resumed.wait(), 5.0)
    await store.opt_out("+15550000001", source="reply:STOP")
    stopped, goes = await d.handle([make_decision(number="+15550000001"),
                                    make_decision(number="+15550000002")])
    assert (stopped.state, stopped.reason) == (MessageState.SUPPRESSED, "opt_out")
    assert goes.submitting_since is not None  # claimed at intake, with the slot it took over
    await wait_state(store, goes.id, MessageState.SUBMITTED)
    [later] = await d.handle([make_decision(number="+15550000003")])
    assert later.submitting_since is not None  # the window's slot came back
    await wait_state(store, later.id, MessageState.SUBMITTED)
    assert len(gw.accepted) == 2


@pytest.mark.sqlite_only  # the writer thread's answer to the loop starts it
async def test_a_claimed_text_starts_its_submit_before_the_intake_resumes(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """The submit of a text claimed in the record's commit is started in the writer's answer
    itself: it reaches the gateway before the intake (and its counters, log lines and the
    record worker) resumes, a loop turn sooner than through the intake."""
    order: list[str] = []
    gw = FakeGateway("smsc")
    submit = gw.submit

    async def noted(sms: OutboundSms) -> SubmitResult:
        order.append("submit")
        return await submit(sms)

    gw.submit = noted  # type: ignore[method-assign]
    record = store.decide_and_record

    async def resumed(*a: Any, **kw: Any) -> Any:
        out = await record(*a, **kw)
        order.append("intake resumed")
        return out

    store.decide_and_record = resumed  # type: ignore[method-assign]
    d = dispatcher(store, gw)
    running(d)
    await asyncio.wait_for(d.resumed.wait(), 5.0)
    [row] = await d.handle([make_decision()])
    assert row.submitting_since is not None
    await wait_state(store, row.id, MessageState.SUBMITTED)
    assert order == ["submit", "intake resumed"]


@pytest.mark.sqlite_only
async def test_an_intake_cancelled_after_its_commit_still_sends_and_gives_back_one_slot(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """Its caller stops waiting between the commit (the submit already started) and its
    resumption: the text still goes, once, and its window slot comes back once: a window of
    one takes the next text at intake again, and no more than that one."""
    gw = FakeGateway("smsc", window=1)
    record = store.decide_and_record
    me: list[asyncio.Task[Any]] = []

    async def cancelled_at_commit(*a: Any, committed: Any = None, **kw: Any) -> Any:
        def then(result: Any) -> None:
            committed(result)
            me[0].cancel()

        return await record(*a, committed=then, **kw)

    store.decide_and_record = cancelled_at_commit  # type: ignore[method-assign]
    d = dispatcher(store, gw)
    running(d)
    await asyncio.wait_for(d.resumed.wait(), 5.0)
    me.append(asyncio.create_task(d.handle([make_decision(call_id="a")])))
    with pytest.raises(asyncio.CancelledError):
        await me[0]
    await gw.wait_calls(1)
    store.decide_and_record = record  # type: ignore[method-assign]
    [first] = await store.list_messages(MessageFilter(limit=None))
    await wait_state(store, first.id, MessageState.SUBMITTED)
    [later] = await d.handle([make_decision(call_id="b")])
    assert later.submitting_since is not None  # the slot came back
    await wait_state(store, later.id, MessageState.SUBMITTED)
    assert d._reserved == 0 and not d._sender.windows["smsc"].locked()
    assert d._sender.windows["smsc"]._value == 1  # given back once, not twice
    assert [s.message_id for s in gw.accepted] == [first.id, later.id]
