"""One agent, two PBXs, end to end (a lab test: run under the lab lock): the lab's real Asterisk (a SIPp call through its dialplan)
and a fake Asterisk replaying a recorded lab call, both listed under rules.yaml ``pbxes:``.
Each caller gets one text, each call and message carries its own PBX's name."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import pytest
from fake_ami import RecordedCall
from pbx_agent import agent_watching

from agent.lab import sipp
from devkit.harness import handsets, until

pytestmark = pytest.mark.lab

LAB_CALLER = "+919811000301"
FAKE_CALLER = "+919811000302"


async def test_lab_asterisk_and_a_second_pbx_in_one_agent(tmp_path: Path, lab, phones,  # type: ignore[no-untyped-def]
                                                         fake_pbx) -> None:
    fake = await fake_pbx("second-pbx")
    pbxes = {"lab": {"port": 5038, "secret": lab.secret(), "cdr_csv": lab.cdr_csv},
             "branch": {"port": fake.port, "secret": fake.secret}}
    async with agent_watching(tmp_path, pbxes) as (agent, sim):
        texts = partial(handsets, sim)
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
        lab_call = await agent.store.get_call(rows[LAB_CALLER].call_id, pbx="lab")
        assert lab_call is not None and lab_call.pbx == "lab" and lab_call.queue == "Billing"
        fake_call = await agent.store.get_call(branch_call, pbx="branch")
        assert fake_call is not None and fake_call.pbx == "branch"
        assert texts()[LAB_CALLER] == 1 and texts()[FAKE_CALLER] == 1, texts()
        assert agent.watches[0].health()["event_times"] == "asterisk"
