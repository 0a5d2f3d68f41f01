"""One agent, two PBXs, end to end (a lab test: run under the lab lock): the lab's real Asterisk (a SIPp call through its dialplan)
and a fake Asterisk replaying a recorded lab call, both listed under rules.yaml ``pbxes:``.
Each caller gets one text, each call and message carries its own PBX's name."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.app import AfterCallAgent
from agent.lab import sipp
from devkit.harness import rules_with, until
from agent.settings import Settings
from agent.sim.main import start_sim
from fake_ami import FakeAmi, RecordedCall

pytestmark = pytest.mark.lab

LAB_CALLER = "+919811000301"
FAKE_CALLER = "+919811000302"


def _secret_file(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


async def test_lab_asterisk_and_a_second_pbx_in_one_agent(tmp_path: Path, lab, phones) -> None:  # type: ignore[no-untyped-def]
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    fake = FakeAmi(secret="second-pbx")
    await fake.start()
    rules = rules_with(tmp_path)
    rules.write_text(rules.read_text() + f"""\
pbxes:
  - name: lab
    port: 5038
    secret_file: {_secret_file(tmp_path / "lab.secret", lab.secret())}
    cdr_csv: {lab.cdr_csv}
  - name: branch
    port: {fake.port}
    secret_file: {_secret_file(tmp_path / "branch.secret", fake.secret)}
""")
    agent = AfterCallAgent(Settings(rules=rules, db=tmp_path / "a.db", http_port=0, agi_port=0))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    texts = lambda: Counter("+" + m.dest.lstrip("+") for m in sim.core.messages)  # noqa: E731
    try:
        await asyncio.wait_for(agent.ready.wait(), 30)
        # A caller gives up in the lab's Billing queue; at the same time the branch PBX's
        # recorded abandoned queue call ends: missed-call-sorry for each.
        events, _, branch_call = RecordedCall("queue_abandoned").clone(
            "branch", FAKE_CALLER, time.time())
        result, _ = await asyncio.gather(
            sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=LAB_CALLER, duration_ms=1500),
            fake.send_bytes(events))
        assert result.ok, result.output
        await until(lambda: {LAB_CALLER, FAKE_CALLER} <= set(texts()), 40)
        await agent.pipeline.drain(10)
        listed = [r for r in await agent.store.list_messages() if r.rule == "missed-call-sorry"]
        rows = {r.number: r for r in listed}
        assert len(listed) == 2  # one row per call: nothing decided twice
        assert {n: r.pbx for n, r in rows.items()} == {LAB_CALLER: "lab", FAKE_CALLER: "branch"}
        lab_call = await agent.store.get_call(rows[LAB_CALLER].call_id)
        assert lab_call is not None and lab_call.pbx == "lab" and lab_call.queue == "Billing"
        fake_call = await agent.store.get_call(branch_call)
        assert fake_call is not None and fake_call.pbx == "branch"
        assert texts()[LAB_CALLER] == 1 and texts()[FAKE_CALLER] == 1, texts()
        assert agent.watches[0].health()["event_times"] == "asterisk"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake.stop()
        await sim.stop()
