"""Two agents watching one PBX (active/active on one PostgreSQL) keep a global rate limit
together: each counts the texts the other sent (dispatch/peers.py). Before, each counted only
its own, so the pair sent up to twice the limit."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from fake_ami import RecordedCall

from agent.app import AfterCallAgent
from agent.settings import Settings
from agent.sim.main import start_sim
from agent.store.base import MessageFilter
from devkit.harness import agent_running, handsets, pbxes_section, rules_with, until

CALLERS = [f"+9198000015{i:02d}" for i in range(6)]  # one per call: no per-number limit


@asynccontextmanager
async def pair(tmp_path: Path, pg_url: str, port: int, secret: str
               ) -> AsyncIterator[list[AfterCallAgent]]:
    rules = rules_with(tmp_path, ("global: 100/1m", "global: 3/1h"))
    rules.write_text(rules.read_text() + pbxes_section(
        tmp_path, {"main": {"port": port, "secret": secret}}))
    async with AsyncExitStack() as stack:
        agents = []
        for name in ("a", "b"):
            agent = AfterCallAgent(Settings(rules=rules, db=pg_url, agent_name=name,
                                            http_port=0, agi_port=0,
                                            webhook_secret="shared-by-both-agents"))
            agents.append(await stack.enter_async_context(agent_running(agent)))
        yield agents


async def test_a_pair_keeps_a_global_limit_together(
        tmp_path: Path, pg_url: str, fake_pbx) -> None:  # type: ignore[no-untyped-def]
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    fake = await fake_pbx("pair-s3cret")
    call = RecordedCall("queue_abandoned")  # texted: missed-call-sorry to the caller
    try:
        async with pair(tmp_path, pg_url, fake.port, fake.secret) as agents:
            store = agents[0].store
            for i, caller in enumerate(CALLERS):
                events, _, _ = call.clone(f"pair{i}", caller, time.time())
                await fake.send_bytes(events)

                async def judged(caller: str = caller) -> bool:
                    return bool(await store.list_messages(MessageFilter(number=caller)))

                await until(judged, 30)
                # both agents have read what the other wrote so far
                seen = time.monotonic()
                await until(lambda: all(a.peers is not None and a.peers.read_from > seen
                                        for a in agents), 10)
            rows = [r for r in await store.list_messages() if r.number in CALLERS]
            states = sorted((r.reason or r.state.value) for r in rows)
            assert len(rows) == len(CALLERS), rows  # one row per call, whichever agent wrote it
            assert states.count("rate_limited") == 3, states
            await until(lambda: sum(handsets(sim).values()) >= 3, 30)
        # the agents have stopped (each drains its outbox): no fourth text went
        assert sum(n for c, n in handsets(sim).items() if c in CALLERS) == 3
    finally:
        await sim.stop()
