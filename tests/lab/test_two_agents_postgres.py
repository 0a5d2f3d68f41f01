"""Two agents on one PBX (active/active) sharing one PostgreSQL, on the lab Asterisk.

Both read AMI and track every call; the idempotency key decides which one records each message
and the claim decides which one submits it. A stream of calls runs while one agent is killed
with SIGKILL and restarted, then the other is killed for good. Every completed call gets one
row and at most one SMS; an SMS is missing only where a kill caught its very submit (then the
row says so: ambiguous, or still claimed by the dead agent), never silently."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from agent.lab import sipp
from devkit.harness import handset, rules_with, until
from agent.lab.postgres import free_port
from agent.sim.main import start_sim
from test_agent_killed import AgentProcess  # the `aftercall run` child process helper

pytestmark = pytest.mark.lab

CALLERS = [f"+9198112007{i:02d}" for i in range(1, 17)]  # one per call: cooldown is per number
SETTLED = {"delivered", "ambiguous"}


async def rows(url: str) -> dict[str, list[tuple[str, str | None, str | None, int]]]:
    """caller -> [(state, reason, claimed_by if mid-submit, attempts)] for this test's callers."""
    conn = await asyncpg.connect(url)
    try:
        out: dict[str, list[tuple[str, str | None, str | None, int]]] = {}
        for r in await conn.fetch(
                "SELECT number, state, reason, submitting_since, claimed_by, attempts"
                " FROM messages WHERE number = ANY($1::text[])", CALLERS):
            out.setdefault(r["number"], []).append(
                (r["state"], r["reason"],
                 r["claimed_by"] if r["submitting_since"] is not None else None, r["attempts"]))
        return out
    finally:
        await conn.close()


async def abandoned(caller: str) -> None:
    r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=caller, duration_ms=300)
    assert r.ok, r.output[-1500:]


async def test_two_agents_kill_9_each_one_sms_per_call(
        tmp_path: Path, lab, pg_url: str) -> None:
    sim = await start_sim(smpp_port=0, http_port=0)
    env = {**os.environ, "AFTERCALL_AMI_SECRET": lab.secret(), "SMPP_PORT": str(sim.smpp_port),
           "SIM_HTTP_PORT": str(sim.http_port), "AFTERCALL_LOG_LEVEL": "info",
           "AFTERCALL_WEBHOOK_SECRET": "shared-by-both-agents"}
    rules = rules_with(tmp_path)  # Billing callers who give up get "sorry we missed you"

    def args(name: str) -> list[str]:
        return ["--rules", str(rules), "--db", pg_url, "--agent-name", name,
                "--http", "127.0.0.1:0", "--agi-port", str(free_port()),
                "--cdr-csv", str(lab.cdr_csv)]

    agents: list[AgentProcess] = []

    async def start(name: str) -> AgentProcess:
        agent = await AgentProcess(name, args(name), env).start()
        agents.append(agent)
        await agent.wait_event("smpp_bound")
        await agent.wait_event("ami_logged_in")
        return agent

    async def calls(chunk: list[str]) -> None:
        for pair in range(0, len(chunk), 2):
            await asyncio.gather(*(abandoned(c) for c in chunk[pair:pair + 2]))

    async def kill_midway(chunk: list[str], kill: Callable[[], Awaitable[None]]) -> None:
        """Calls keep coming while an agent dies: the kill lands after the chunk's first call
        ended, while the others are still ringing."""
        stream = asyncio.create_task(calls(chunk))
        await until(lambda: len(sim.core.messages) >= done_before + 1, timeout=30)
        await kill()
        await stream

    try:
        a, b = await start("agent-a"), await start("agent-b")
        await calls(CALLERS[:4])
        await until(lambda: len(sim.core.messages) >= 4)
        done_before = len(sim.core.messages)
        await kill_midway(CALLERS[4:8], a.kill)
        a = await start("agent-a")  # back: it judges only its own interrupted submits
        await a.wait_event("cdr_reconciled")
        await calls(CALLERS[8:10])
        done_before = len(sim.core.messages)
        await kill_midway(CALLERS[10:14], b.kill)  # b stays dead: a carries on alone
        await calls(CALLERS[14:])

        async def snapshot() -> dict[str, list[tuple[str, str | None, str | None, int]]]:
            return await rows(pg_url)

        state: dict[str, list[tuple[str, str | None, str | None, int]]] = {}

        def settled() -> bool:
            return len(state) == len(CALLERS) and all(
                r[0] in SETTLED or r[2] == "agent-b" for rs in state.values() for r in rs)

        async def poll() -> None:
            nonlocal state
            while not settled():
                state = await snapshot()
                await asyncio.sleep(0.2)

        try:
            await asyncio.wait_for(poll(), 60)
        except TimeoutError:
            raise AssertionError(f"rows did not settle: {state}") from None
        assert all(len(rs) == 1 for rs in state.values()), state  # one row per call
        for caller, [(st, reason, claimed_by, attempts)] in state.items():
            got = len(handset(sim, caller))
            if st == "delivered":
                assert got == 1, (caller, st, got)  # exactly one SMS
            else:  # a kill caught this very submit: said so, never sent twice
                assert got <= 1 and attempts == 1, (caller, st, reason, claimed_by, got)
        unsent = [c for c, rs in state.items() if rs[0][0] != "delivered"]
        assert len(unsent) <= 2, state  # at most one submit per kill can be caught mid-flight
        names = [n for agent in agents for n in agent.names()]
        assert "sms_duplicate_ignored" in names  # both agents did see the same calls
    finally:
        for agent in agents:  # shown when the test fails
            print(agent.name, [(e.get("event"), e.get("to"), e.get("reason"), e.get("error"))
                               for e in agent.events if "ami" not in str(e.get("event"))][-40:])
        for agent in agents:
            if agent.proc is not None and agent.proc.returncode is None:
                await agent.kill()
        await sim.stop()
