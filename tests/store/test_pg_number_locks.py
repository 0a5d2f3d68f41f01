"""Agents sharing PostgreSQL decide about one number in turn, as SQLite's one writer does: two
calls to one number decided at the same instant by two agents used to both pass a cooldown or
a per-number limit (each read the number's texts before the other's were committed), and an
opt-out committed while another agent's decision was on its way was not honoured. Decisions
about different numbers still go side by side, and a call texting a caller and an agent's
mobile, decided beside one texting them the other way round, does not deadlock.

Each test holds one agent inside its decision (its facts read, its rows not yet committed) with
a row lock of the test's own on that call's row, then starts the other agent and waits until
that one has either finished or is waiting in PostgreSQL, and only then lets the first go."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from agent.dispatch import Dispatcher
from agent.errors import StoreError
from agent.models import CallRecord, MessageState, RecipientKind, Trigger
from agent.sms.policy import AudienceLimits, Limits, parse_rate
from agent.store.base import MessageFilter, MessageRow
from agent.store.postgres import PostgresStore
from agent.store.postgres.numbers import CLASS
from devkit.harness import until
from tests.store.conftest import MakeDecision

START = datetime.now(UTC)
_ticks = itertools.count()
NUMBER = "+919811000200"
MOBILE = "+919811000300"  # an agent's mobile


def clock() -> datetime:
    return START + timedelta(milliseconds=next(_ticks))


class Agent:
    def __init__(self, store: PostgresStore, limits: Limits) -> None:
        self.store = store
        self.name = store.owner
        self.dispatcher = Dispatcher(store, {}, limits=limits, clock=clock)

    async def call(self, make: MakeDecision, call_id: str, *numbers: str, rule: str = "r",
                   cooldown: float | None = 3600) -> list[MessageRow]:
        """A call that texts ``numbers`` (its caller's first, then an agent's mobile)."""
        kinds = (RecipientKind.CALLER, RecipientKind.AGENT)
        return await self.dispatcher.handle(
            [make(call_id=call_id, number=n, recipient=kind, rule=rule,
                  cooldown_seconds=cooldown, call_ended_at=clock())
             for n, kind in zip(numbers, kinds, strict=False)],
            CallRecord(call_id=call_id, caller=numbers[0]))


@pytest.fixture
async def agents(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        yield a, b


@pytest.fixture
async def watch(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()


async def waits(watch: asyncpg.Connection, agent: str, what: str) -> bool:
    """``agent``'s store has a statement waiting on a lock: ``advisory`` (a number's), or
    ``transactionid`` (a row another transaction holds)."""
    return bool(await watch.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        " AND wait_event_type = 'Lock' AND wait_event = $2", f"aftercall:{agent}", what))


@asynccontextmanager
async def held_inside(pg_url: str, watch: asyncpg.Connection, agent: Agent, call_id: str,
                      work: Awaitable[Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """``work`` (a call of ``agent``) held between its decision and its commit: the test
    holds the call's row, which the write of the decided rows updates. Let go on exit."""
    await agent.store.save_call(CallRecord(call_id=call_id, caller=NUMBER))
    blocker = await asyncpg.connect(pg_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM calls WHERE call_id = $1 FOR UPDATE", call_id)
    task = asyncio.ensure_future(work)
    try:
        await until(lambda: waits(watch, str(agent.name), "transactionid"), 10,
                    lambda: task)
        yield task
    finally:
        await tx.rollback()
        await blocker.close()
        await asyncio.wait_for(asyncio.shield(task), 10)


async def settled_or_waiting(watch: asyncpg.Connection, agent: str,
                             task: asyncio.Task[Any]) -> None:
    """Until ``task`` has finished or ``agent`` waits for a number's lock."""
    async def check() -> bool:
        return task.done() or await waits(watch, agent, "advisory")
    await until(check, 10, lambda: task)


def outcomes(*rows: list[MessageRow]) -> list[str]:
    return sorted(r.reason or r.state.value for rs in rows for r in rs)


@pytest.mark.parametrize("limit", ["cooldown", "per_number"])
async def test_two_agents_deciding_one_number_at_once_send_what_the_rule_allows(
        agents: tuple[PostgresStore, PostgresStore], watch: asyncpg.Connection, pg_url: str,
        make_decision: MakeDecision, limit: str) -> None:
    if limit == "cooldown":  # one rule, a text per 1h per number
        limits, rules, cooldown = Limits(), ("r", "r"), 3600.0
    else:  # two rules, no cooldown; one text per hour to a caller's number
        limits = Limits(callers=AudienceLimits(per_number=parse_rate("1/1h")))
        rules, cooldown = ("r1", "r2"), None
    a, b = Agent(agents[0], limits), Agent(agents[1], limits)
    async with held_inside(pg_url, watch, a, "call-a",
                           a.call(make_decision, "call-a", NUMBER, rule=rules[0],
                                  cooldown=cooldown)) as first:
        second = asyncio.ensure_future(
            b.call(make_decision, "call-b", NUMBER, rule=rules[1], cooldown=cooldown))
        await settled_or_waiting(watch, "b", second)
    want = "cooldown" if limit == "cooldown" else "rate_limited"
    assert outcomes(await first, await second) == sorted(["queued", want])
    sent = await a.store.list_messages(MessageFilter(number=NUMBER,
                                                     states=[MessageState.QUEUED]))
    assert [r.call_id for r in sent] == ["call-a"]  # the one decided first


@pytest.mark.parametrize("listed", ["opt_out", "dnd"])
async def test_an_opt_out_or_dnd_entry_that_commits_first_is_honoured(
        agents: tuple[PostgresStore, PostgresStore], watch: asyncpg.Connection, pg_url: str,
        make_decision: MakeDecision, listed: str) -> None:
    """Agent b decides a text to NUMBER while agent a (a STOP reply reached it, or the DND
    list was given it) lists NUMBER. Either the entry commits first and b's text is
    suppressed, or b's text commits first; never a text committed after the entry was."""
    a, b = Agent(agents[0], Limits()), Agent(agents[1], Limits())
    order: list[str] = []

    async def opt_out() -> None:
        if listed == "opt_out":
            await a.store.opt_out(NUMBER, source="reply")
        else:
            await a.store.add_dnd([NUMBER], source="cli")
        order.append("opt_out")

    async def texted() -> list[MessageRow]:
        rows = await b.call(make_decision, "call-b", NUMBER)
        order.append("text")
        return rows

    async with held_inside(pg_url, watch, b, "call-b", texted()) as text:
        stop = asyncio.ensure_future(opt_out())
        await settled_or_waiting(watch, "a", stop)
    await stop
    [row] = await text
    if order == ["opt_out", "text"]:
        assert row.reason == listed, order
    else:
        assert order == ["text", "opt_out"] and row.state is MessageState.QUEUED
    # after it, no agent texts the number
    [later] = await a.call(make_decision, "call-a", NUMBER, rule="other")
    assert later.reason == listed


async def test_decisions_about_different_numbers_do_not_wait_for_each_other(
        agents: tuple[PostgresStore, PostgresStore], watch: asyncpg.Connection, pg_url: str,
        make_decision: MakeDecision) -> None:
    a, b = Agent(agents[0], Limits()), Agent(agents[1], Limits())
    async with held_inside(pg_url, watch, a, "call-a",
                           a.call(make_decision, "call-a", NUMBER)) as first:
        # a holds NUMBER's lock until the test lets go; b's caller is another number
        [row] = await asyncio.wait_for(b.call(make_decision, "call-b", "+919811000201"), 10)
        assert row.state is MessageState.QUEUED and not first.done()
    [row] = await first
    assert row.state is MessageState.QUEUED


async def test_a_caller_and_an_agents_mobile_in_opposite_roles_do_not_deadlock(
        agents: tuple[PostgresStore, PostgresStore], watch: asyncpg.Connection, pg_url: str,
        make_decision: MakeDecision) -> None:
    """Call 1 texts its caller NUMBER and the agent's MOBILE; call 2, at another agent, was
    from MOBILE and answered by the agent whose mobile is NUMBER. Each call's decision locks
    both numbers: in one order, so the second waits for the first and then sees its texts."""
    a, b = Agent(agents[0], Limits()), Agent(agents[1], Limits())
    async with held_inside(pg_url, watch, a, "call-1",
                           a.call(make_decision, "call-1", NUMBER, MOBILE)) as first:
        second = asyncio.ensure_future(b.call(make_decision, "call-2", MOBILE, NUMBER))
        await settled_or_waiting(watch, "b", second)
    assert outcomes(await first) == ["queued", "queued"]
    assert outcomes(await second) == ["cooldown", "cooldown"]
    # and many at once, each pair in opposite orders: every one settles, none fails
    rows = await asyncio.wait_for(asyncio.gather(*(
        agent.call(make_decision, f"burst-{i}", *pair, rule=f"r{i}")
        for i in range(20)
        for agent, pair in ((a, (f"+9198112{i:05d}", f"+9198113{i:05d}")),
                            (b, (f"+9198113{i:05d}", f"+9198112{i:05d}"))))), 60)
    assert outcomes(*rows).count("queued") == 40  # each rule's text to each number, once


async def test_one_agents_two_calls_to_one_number_in_flight_together(
        agents: tuple[PostgresStore, PostgresStore], make_decision: MakeDecision) -> None:
    """Two intakes about one number never share a group (the second reads the first's row)."""
    a = Agent(agents[0], Limits())
    rows = await asyncio.gather(*(a.call(make_decision, f"c{i}", NUMBER) for i in range(4)))
    assert outcomes(*rows) == ["cooldown"] * 3 + ["queued"]


async def test_a_calls_later_record_is_not_overtaken_by_its_earlier_one_that_waits(
        agents: tuple[PostgresStore, PostgresStore], watch: asyncpg.Connection, pg_url: str,
        make_decision: MakeDecision) -> None:
    """b's record of a call as connected waits for NUMBER (a holds it); the same call's
    record as completed, which texts nobody, comes after it and stays the call's record."""
    a, b = Agent(agents[0], Limits()), Agent(agents[1], Limits())
    connected = CallRecord(call_id="c", caller=NUMBER, trigger=Trigger.CALL_CONNECTED)
    completed = CallRecord(call_id="c", caller=NUMBER, trigger=Trigger.CALL_COMPLETED)
    async with held_inside(pg_url, watch, a, "call-a", a.call(make_decision, "call-a", NUMBER)):
        first = asyncio.ensure_future(b.dispatcher.handle(
            [make_decision(call_id="c", number=NUMBER, rule="on-connect")], connected))
        await settled_or_waiting(watch, "b", first)
        second = asyncio.ensure_future(b.dispatcher.handle([], completed))
        # until it has either been written or is queued behind the first
        await until(lambda: second.done() or bool(b.store._waiting and b.store._waiting._waiting))
    await asyncio.gather(first, second)
    stored = await b.store.get_call("c", pbx="default")
    assert stored is not None and stored.trigger is Trigger.CALL_COMPLETED


async def test_no_number_stays_locked_after_a_decision_or_a_failed_write(
        agents: tuple[PostgresStore, PostgresStore], watch: asyncpg.Connection,
        make_decision: MakeDecision) -> None:
    """The locks are held by a connection's session and let go after the rows' commit; a
    write that fails closes its connection, and they go with it."""
    a, b = Agent(agents[0], Limits()), Agent(agents[1], Limits())
    with pytest.raises(StoreError):
        await a.dispatcher.handle([make_decision(call_id="bad", number=NUMBER,
                                                 text="bad\x00")])
    [row] = await asyncio.wait_for(b.call(make_decision, "call-b", NUMBER), 10)
    assert row.state is MessageState.QUEUED

    async def none_held() -> bool:
        return not await watch.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1",
            CLASS)
    await until(none_held, 10)
