"""One agent watching several PBXs, as the several-PBX tests run it: the simulator over SMPP,
this repository's rules.yaml with a ``pbxes:`` section naming every link (no AMI settings), a
SQLite file, the agent running until the test is done with it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from agent.app import AfterCallAgent
from agent.settings import Settings
from agent.sim.main import RunningSim, start_sim
from devkit.harness import agent_running, pbxes_section, rules_with


@asynccontextmanager
async def agent_watching(
        workdir: Path, pbxes: Mapping[str, Mapping[str, object]],
) -> AsyncIterator[tuple[AfterCallAgent, RunningSim]]:
    """The agent (ready: every link logged in) and the simulator it texts through; ``pbxes``
    as ``devkit.harness.pbxes_section`` takes them."""
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    try:
        rules = rules_with(workdir)
        rules.write_text(rules.read_text() + pbxes_section(workdir, pbxes))
        agent = AfterCallAgent(Settings(rules=rules, db=workdir / "a.db", http_port=0,
                                        agi_port=0))
        async with agent_running(agent):
            yield agent, sim
    finally:
        await sim.stop()
