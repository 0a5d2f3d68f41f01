"""End to end, languages: a fake Asterisk replays the lab's recorded abandoned queue call with
the caller's channel in Hindi (``Language: hi``, as AMI reports it) to a real agent (SQLite, the
simulator over SMPP): the caller's handset gets the Hindi variant; the same call in English
gets the English text."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from agent.app import AfterCallAgent
from devkit.harness import rules_with, until
from agent.settings import Settings
from agent.sim.main import start_sim
from fake_ami import FakeAmi, RecordedCall


async def test_a_hindi_channel_gets_the_hindi_variant(tmp_path: Path) -> None:
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    fake = FakeAmi()
    await fake.start()
    agent = AfterCallAgent(Settings(ami_secret=fake.secret, ami_port=fake.port,
                                    rules=rules_with(tmp_path), db=tmp_path / "a.db",
                                    http_port=0, agi_port=0))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    try:
        await asyncio.wait_for(agent.ready.wait(), 30)
        call = RecordedCall("queue_abandoned")
        hindi, english = "+919800000101", "+919800000102"
        events, _, _ = call.clone("hi", hindi, time.time())
        assert b"Language: en" in events
        await fake.send_bytes(events.replace(b"Language: en", b"Language: hi"))
        events, _, _ = call.clone("en", english, time.time())
        await fake.send_bytes(events)
        texts = lambda: {"+" + m.dest.lstrip("+"): m.text for m in sim.core.messages}  # noqa: E731
        await until(lambda: {hindi, english} <= set(texts()), 60, show=texts)
        assert texts()[hindi].startswith("क्षमा करें, हम आपकी कॉल नहीं उठा सके"), texts()
        assert texts()[english].startswith("Sorry we missed your call"), texts()
        rows = {r.number: r.template for r in await agent.store.list_messages()}
        assert rows == {hindi: "sorry_we_missed_you_hi", english: "sorry_we_missed_you"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake.stop()
        await sim.stop()
