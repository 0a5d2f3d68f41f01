"""Agents sharing PostgreSQL keep the global, daily and spend limits together: each counts the
texts the others wrote (dispatch/peers.py), not only its own (each used to allow the whole
limit, so N agents sent N times it)."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agent.dispatch import Dispatcher
from agent.dispatch.peers import PeerSends
from agent.sms.policy import AudienceLimits, Limits, parse_rate
from agent.sms.spend import Caps, SpendPolicy
from agent.store.postgres import PostgresStore
from tests.store.conftest import MakeDecision

START = datetime.now(UTC)
_ticks = itertools.count()


def clock() -> datetime:
    """The agents' one clock: a millisecond later at each reading."""
    return START + timedelta(milliseconds=next(_ticks))


class Agent:
    """One agent's store, dispatcher and reader of the others' texts."""

    def __init__(self, store: PostgresStore, limits: Limits) -> None:
        self.store = store
        self.dispatcher = Dispatcher(store, {}, limits=limits, clock=clock)
        self.peers = PeerSends(store.sends_by_others, self.dispatcher.count_others, clock)

    async def send(self, make: MakeDecision, call: str, **kw: Any) -> str:
        [row] = await self.dispatcher.handle(
            [make(call_id=call, number=f"+1555{zlib.crc32(call.encode()) % 10**7:07d}",
                  call_ended_at=clock(), **kw)])
        return row.reason or row.state.value


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[Callable[[Limits], tuple[Agent, Agent]]]:
    stores: list[PostgresStore] = []

    def make(limits: Limits) -> tuple[Agent, Agent]:
        return Agent(stores[0], limits), Agent(stores[1], limits)

    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        stores += [a, b]
        yield make


GLOBAL = Limits(callers=AudienceLimits(global_=parse_rate("4/1h")))


async def test_a_global_limit_holds_for_two_agents_together(
        pair: Callable[[Limits], tuple[Agent, Agent]], make_decision: MakeDecision) -> None:
    a, b = pair(GLOBAL)
    assert [await a.send(make_decision, f"a{i}") for i in range(3)] == ["queued"] * 3
    assert await b.send(make_decision, "b0") == "queued"  # b's counters start from the store
    assert await a.peers.catch_up() == 1  # b's text; a's own three are not counted twice
    assert await a.peers.catch_up() == 0  # nor b's again
    assert await a.send(make_decision, "a3") == "rate_limited"


async def test_what_an_agent_started_counting_from_is_not_counted_again(
        pair: Callable[[Limits], tuple[Agent, Agent]], make_decision: MakeDecision) -> None:
    a, b = pair(GLOBAL)
    assert await a.send(make_decision, "a0") == "queued"
    assert await b.send(make_decision, "b0") == "queued"  # b starts from the store: a0 and b0
    assert await b.peers.catch_up() == 1  # a0, read again: already in b's count
    assert [await b.send(make_decision, f"b{i}") for i in (1, 2)] == ["queued"] * 2
    assert await b.send(make_decision, "b3") == "rate_limited"
    assert await a.peers.catch_up() == 3
    assert await a.send(make_decision, "a1") == "rate_limited"


async def test_a_daily_spend_cap_holds_for_two_agents_together(
        pair: Callable[[Limits], tuple[Agent, Agent]], make_decision: MakeDecision) -> None:
    limits = Limits(spend=SpendPolicy.build(
        {"smsc": {"default": Decimal("1.00")}}, currency="INR", fallback=None,
        caps=Caps(Decimal("3.00"), None), timezone="UTC"))
    a, b = pair(limits)
    assert await a.send(make_decision, "a0") == "queued"
    assert await b.send(make_decision, "b0") == "queued"
    assert await b.send(make_decision, "b1") == "queued"
    assert await a.peers.catch_up() == 2
    assert await a.send(make_decision, "a1") == "spend_cap"


async def test_suppressed_texts_of_the_others_do_not_count(
        pair: Callable[[Limits], tuple[Agent, Agent]], make_decision: MakeDecision) -> None:
    a, b = pair(GLOBAL)
    assert await a.send(make_decision, "a0") == "queued"
    await b.store.opt_out("+15550000000", source="test")
    [row] = await b.dispatcher.handle([make_decision(call_id="b0", number="+15550000000")])
    assert row.reason == "opt_out"
    assert await a.peers.catch_up() == 0
