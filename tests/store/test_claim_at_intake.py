"""A text that can go at once has its first attempt claimed in the commit that queues it: one
commit from decision to submit, and a submit interrupted at any point after that commit leaves
the row ambiguous (never resent), exactly as a claim made by its own commit would. Both stores
do this (PostgreSQL in the record's one statement): both run here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from test_dispatch import WAIT, FakeGateway, MakeDecision, dispatcher, running, wait_state

from agent.dispatch import Dispatcher
from agent.models import MessageState, OutboundSms, SubmitResult
from agent.store.sqlite import SqliteStore

__all__ = ["running"]  # the fixture, shared with test_dispatch


@dataclass
class CountingGateway(FakeGateway):
    """Notes how many commits the store had made when each submit reached it."""

    store: SqliteStore | None = None
    commits_at_submit: list[int] = field(default_factory=list)

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        assert self.store is not None
        self.commits_at_submit.append(self.store.commits)
        return await super().submit(sms)


@pytest.mark.sqlite_only  # counts the SQLite writer's commits
async def test_a_text_that_can_go_at_once_costs_one_commit_before_its_submit(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = CountingGateway("smsc", store=store)
    d = dispatcher(store, gw)
    running(d)
    await asyncio.wait_for(d.resumed.wait(), WAIT)
    before = store.commits
    [row] = await d.handle([make_decision()])
    assert row.state is MessageState.QUEUED
    assert row.submitting_since is not None and row.attempts == 1  # claimed with its queueing
    await gw.wait_calls(1)
    assert gw.commits_at_submit == [before + 1]
    done = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert done.attempts == 1
    history = [(e.state, e.reason) for e in await store.message_events(row.id)]
    assert history == [(MessageState.QUEUED, None), (MessageState.QUEUED, "submitting"),
                       (MessageState.SUBMITTED, None)]


async def test_a_submit_interrupted_after_the_intake_commit_is_ambiguous_and_never_resent(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc", hold=asyncio.Event())  # the submit_sm is out, no answer comes
    d = dispatcher(store, gw)
    first = running(d)
    await asyncio.wait_for(d.resumed.wait(), WAIT)
    [row] = await d.handle([make_decision()])
    await gw.wait_calls(1)
    await d.stop(timeout=0)  # the agent dies mid-submit
    await asyncio.wait_for(first, WAIT)  # type: ignore[arg-type]

    again = FakeGateway("smsc")
    d2 = dispatcher(store, again)
    running(d2)
    await asyncio.wait_for(d2.resumed.wait(), WAIT)
    got = await store.get_message(row.id)
    assert got is not None and (got.state, got.reason) == (MessageState.AMBIGUOUS, "interrupted")
    assert got.attempts == 1
    # nothing the outbox would pick up: only an operator's verdict sends it again
    assert row.id not in {m.id for m in await store.due_messages(datetime.now(UTC), 100)}
    assert await d2.settle(WAIT) == 0
    assert again.calls == []


@pytest.mark.parametrize("why", ["gateway_down", "window_full", "not_resumed"])
async def test_a_text_that_can_not_go_at_once_is_queued_unclaimed(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object],
    why: str,
) -> None:
    """Claimed only when it is submitted: a row waiting (for a gateway, a window slot, the
    resume of the outbox) must not come back ambiguous from a crash meanwhile, since nothing
    had left this host."""
    gw = FakeGateway("smsc", window=1, healthy=why != "gateway_down", hold=asyncio.Event())
    d = dispatcher(store, gw)
    if why != "not_resumed":
        running(d)
        await asyncio.wait_for(d.resumed.wait(), WAIT)
    if why == "window_full":
        await d.handle([make_decision(rule="first")])
        await gw.wait_calls(1)  # in flight, holding the window's one slot
    [row] = await d.handle([make_decision(rule="second")])
    assert row.state is MessageState.QUEUED  # as its intake transaction wrote it:
    assert row.submitting_since is None and row.attempts == 0  # unclaimed
    if why == "window_full":
        gw.hold.set()  # type: ignore[union-attr]
        sent = await wait_state(store, row.id, MessageState.SUBMITTED)
        assert sent.attempts == 1


async def test_a_duplicate_decision_gives_its_window_slot_back(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc", window=1)
    d = dispatcher(store, gw)
    running(d)
    await asyncio.wait_for(d.resumed.wait(), WAIT)
    [first] = await d.handle([make_decision()])
    await wait_state(store, first.id, MessageState.SUBMITTED)
    assert await d.settle(WAIT) == 0  # its send is over: the slot is back
    [dup] = await d.handle([make_decision()])  # the same idempotency key: not written again
    assert dup.id == first.id
    [other] = await d.handle([make_decision(rule="other")])
    assert other.submitting_since is not None  # the window's one slot was free again
    await wait_state(store, other.id, MessageState.SUBMITTED)
    assert len(gw.calls) == 2


@dataclass
class OrderGateway(FakeGateway):
    """Notes, at each submit, how many intake log lines had been written by then."""

    logs: list[dict[str, object]] = field(default_factory=list)
    lines_at_submit: list[int] = field(default_factory=list)

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        self.lines_at_submit.append(len(self.logs))
        return await super().submit(sms)


async def test_a_claimed_text_reaches_its_gateway_before_the_intake_logs_it(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """Its submit starts as soon as the commit is back; the intake's log lines and metrics
    come after (they are not on the path to the SMSC)."""
    from structlog.testing import capture_logs

    d = dispatcher(store, gw := OrderGateway("smsc"))
    running(d)
    await asyncio.wait_for(d.resumed.wait(), WAIT)
    with capture_logs() as logs:
        gw.logs = logs
        [row] = await d.handle([make_decision()])
        assert row.state is MessageState.QUEUED and row.submitting_since is not None
        assert gw.lines_at_submit == [0]  # called by the time handle returned, before any line
        assert [e["event"] for e in logs] == ["sms_queued"]


PIPELINE_RULES = """\
version: 1
defaults: {region: IN, timezone: Asia/Kolkata, sender_id: ACMECO, gateway: smsc}
gateways:
  smsc: {type: smpp, host: 127.0.0.1, system_id: aftercall}
templates:
  sorry: {text: "Sorry we missed your call. -ACME"}
rules:
  - name: missed
    match: {disposition: [missed]}
    send: {to: caller, template: sorry}
"""


async def test_a_completed_call_is_logged_after_its_text_reached_the_gateway(
    store: SqliteStore, running: Callable[[Dispatcher], object]
) -> None:
    """The record pipeline's line for the call (call_completed) is written once the call is
    stored and its text handed to the gateway, not between the hangup and the submit."""
    from structlog.testing import capture_logs

    from agent.loop.pipeline import RecordPipeline
    from agent.metrics import Metrics
    from agent.models import CallRecord, Disposition
    from agent.rules.loader import load_rules_text

    rules = load_rules_text(PIPELINE_RULES, "r.yaml", {})
    d = dispatcher(store, gw := OrderGateway("smsc"))
    running(d)
    await asyncio.wait_for(d.resumed.wait(), WAIT)
    now = datetime.now(UTC)
    pipeline = RecordPipeline(store, d, Metrics(), rules=lambda: rules, clock=lambda: now)
    record = CallRecord("1723609800.1", caller="+919876500001", disposition=Disposition.MISSED,
                        started_at=now, ended_at=now)
    with capture_logs() as logs:
        gw.logs = logs
        await pipeline.apply(record)
        assert gw.lines_at_submit == [0]
        assert [e["event"] for e in logs] == ["sms_queued", "call_completed"]
