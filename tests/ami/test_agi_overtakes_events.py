"""A FastAGI hook that overtakes its channel's AMI events. Asterisk sends Newchannel before the
dialplan reaches ``AGI(...)``, but on a busy agent that event can still be queued behind
others when the hook connects: the hook used to be answered "unknown call" at once
(AFTERCALL_ATTACHED 0) and its tags were lost. It now waits, bounded, until the agent has
handled what it had read; an unknown channel on an idle agent is still answered at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fake_ami import RecordedCall
from pbx_agent import agent_watching

from agent.loop import watch
from devkit.harness import until

CALLER = "+919800000511"


async def _agi_tag(port: int, uniqueid: str) -> str:
    """The dialplan's ``AGI(agi://AGENT/tag?name=lead&CAMPAIGN=diwali)`` on channel
    ``uniqueid``: what the agent answers last (AFTERCALL_ATTACHED)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network: yes\nagi_network_script: tag?name=lead&CAMPAIGN=diwali\n"
                 b"agi_uniqueid: " + uniqueid.encode() + b"\nagi_channel: PJSIP/trunk-1\n\n")
    line = ""
    while not line.startswith("SET VARIABLE AFTERCALL_ATTACHED"):
        line = (await asyncio.wait_for(reader.readline(), 30)).decode().strip()
        writer.write(b"200 result=1\n")
    await writer.drain()
    writer.close()
    return line


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The agent's handling of AMI events waits while this is clear: a busy agent, its events
    read from the socket and queued, not yet handled (set: handled as usual)."""
    opened = asyncio.Event()
    opened.set()
    handle = watch.PbxWatch.handle_event

    async def gated(self: watch.PbxWatch, event: Any) -> None:
        await opened.wait()
        await handle(self, event)

    monkeypatch.setattr(watch.PbxWatch, "handle_event", gated)
    return opened


async def test_a_hook_that_overtakes_its_channels_events_still_tags_the_call(
        tmp_path: Path, fake_pbx: Any, gate: asyncio.Event) -> None:
    fake = await fake_pbx("s3cret")
    call = RecordedCall("queue_answered")
    events, _, call_id = call.clone("agi", CALLER, time.time())
    blocks = [b + b"\r\n\r\n" for b in events.split(b"\r\n\r\n") if b.strip()]
    cut = next(i for i, b in enumerate(blocks) if b.startswith(b"Event: Hangup"))
    async with agent_watching(tmp_path, {"blr": {"port": fake.port,
                                                  "secret": fake.secret}}) as (agent, _):
        [w] = agent.watches
        gate.clear()
        await fake.send_bytes(b"".join(blocks[:cut]))  # read and queued, not handled yet
        await until(lambda: w.ami.queue.qsize() > 0, 10)
        assert not w.tracker.holds(call_id)
        hook = asyncio.create_task(_agi_tag(agent.agi.port, call_id))
        # the hook found no such channel, and waits for the events the agent has not handled
        await until(lambda: call_id in w._sightings, 10)
        assert not hook.done()
        gate.set()
        assert await hook == "SET VARIABLE AFTERCALL_ATTACHED 1"
        await fake.send_bytes(b"".join(blocks[cut:]))

        async def ended() -> bool:
            c = await agent.store.get_call(call_id, pbx="blr")
            return c is not None and c.ended_at is not None

        await until(ended, 20)
        stored = await agent.store.get_call(call_id, pbx="blr")
        assert stored is not None and "lead" in stored.tags
        assert stored.vars["CAMPAIGN"] == "diwali"
        assert not w._sightings  # no waiter left behind


async def test_an_unknown_channel_is_answered_once_the_agent_has_caught_up(
        tmp_path: Path, fake_pbx: Any, gate: asyncio.Event,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not after the whole wait: an idle agent that handled all it read knows the channel is
    not one of its calls (a hook run on a PBX it does not watch, say)."""
    monkeypatch.setattr(watch, "AGI_WAIT_S", 600.0)
    fake = await fake_pbx("s3cret")
    async with agent_watching(tmp_path, {"blr": {"port": fake.port,
                                                  "secret": fake.secret}}) as (agent, _):
        [w] = agent.watches
        assert await _agi_tag(agent.agi.port, "nosuch-1.1") == (
            "SET VARIABLE AFTERCALL_ATTACHED 0")
        # and a busy one answers as soon as it has handled its backlog without the channel
        events, _, _ = RecordedCall("queue_answered").clone("busy", CALLER, time.time())
        gate.clear()
        await fake.send_bytes(events)
        await until(lambda: w.ami.queue.qsize() > 0, 10)
        hook = asyncio.create_task(_agi_tag(agent.agi.port, "nosuch-1.2"))
        await until(lambda: "nosuch-1.2" in w._sightings, 10)
        gate.set()
        assert await hook == "SET VARIABLE AFTERCALL_ATTACHED 0"
        assert not w._sightings
