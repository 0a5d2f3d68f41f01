"""A submit that was started and never finished (its agent died and, on a shared database,
may never come back) is judged by whoever is still running: ambiguous, never resent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from test_dispatch import WAIT, FakeGateway, dispatcher, wait_state

from agent.models import Decision, MessageState
from agent.store.seams import Store

MakeDecision = Callable[..., Decision]
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


async def test_only_submits_started_before_the_cut_are_judged(
    store: Store, make_decision: MakeDecision
) -> None:
    rows = []
    for i, started in enumerate((T0, T0 + timedelta(minutes=9))):
        row, _ = await store.insert_message(make_decision(call_id=f"c{i}"),
                                            state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
        assert await store.claim_for_submit(row.id, now=started) is not None
        rows.append(row)
    now = T0 + timedelta(minutes=10)
    judged = await store.recover_in_flight(now=now, started_before=now - timedelta(minutes=5))
    assert [r.id for r in judged] == [rows[0].id]
    assert judged[0].state is MessageState.AMBIGUOUS and judged[0].reason == "interrupted"
    fresh = await store.get_message(rows[1].id)
    assert fresh is not None and fresh.submitting_since is not None  # still someone's submit


async def test_a_running_agent_judges_a_dead_peers_submit(
    pg_url: str, make_decision: MakeDecision
) -> None:
    from agent.store.postgres import PostgresStore

    now = datetime.now(UTC)
    async with PostgresStore(pg_url, owner="a") as a, PostgresStore(pg_url, owner="b") as b:
        orphan, _ = await b.insert_message(make_decision(call_id="orphan"),
                                           state=MessageState.QUEUED, now=now,
                                           next_attempt_at=now)
        assert await b.claim_for_submit(orphan.id, now=now) is not None  # then b dies
        gw = FakeGateway("smsc")
        disp = dispatcher(a, gw, stale_submit=timedelta(seconds=0.5))
        task = asyncio.create_task(disp.run())
        try:
            # At a's start the submit is b's and fresh: not a's to judge; later it is stale.
            row = await wait_state(a, orphan.id, MessageState.AMBIGUOUS)
        finally:
            await disp.stop(1.0)
            await asyncio.wait_for(task, WAIT)
        assert row.reason == "interrupted" and row.attempts == 1
        assert (datetime.now(UTC) - now) >= timedelta(seconds=0.5)
        assert gw.calls == []  # never resent
