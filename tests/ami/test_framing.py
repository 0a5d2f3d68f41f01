"""AMI framing bounds against a scripted AMI peer on loopback (issue #19, finding 13)."""

from __future__ import annotations

import asyncio

import pytest
from fake_ami import FakeAmi
from structlog.testing import capture_logs
from test_client_fake import _cfg, _until

from agent.ami import framing
from agent.ami.client import AmiClient


@pytest.fixture
async def fake():
    f = FakeAmi()
    await f.start()
    yield f
    await f.stop()


async def test_unterminated_message_over_the_bound_ends_the_link_and_it_reconnects(
    fake: FakeAmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing.BoundedAMIProtocol, "max_message", 64 * 1024)
    client = AmiClient(_cfg(fake.port, ping_interval=30, ping_timeout=30))
    task = asyncio.create_task(client.run())
    try:
        await _until(lambda: fake.logins >= 1 and client.connected)
        with capture_logs() as logs:
            # A message that never ends: header lines, no blank line, well past the bound.
            line = "Variable: " + "x" * 1000 + "\r\n"
            await fake.send_event("Event: VarSet\r\n" + line * 100)
            await _until(lambda: fake.logins >= 2 and client.connected)
        too_long = [e for e in logs if e["event"] == "ami_message_too_long"]
        assert len(too_long) == 1 and too_long[0]["bound"] == 64 * 1024
        (lost,) = [e for e in logs if e["event"] == "ami_disconnected"]  # said once, with why
        assert lost["cause"] == f"an AMI message over {64 * 1024} bytes"
        assert client.stats.reconnects >= 1
        # The new connection works: a normal event arrives.
        await fake.send_event("Event: Newchannel\r\nUniqueid: 1\r\nLinkedid: 1\r\n\r\n")
        await _until(lambda: client.queue.qsize() >= 1)
    finally:
        await client.close()
        task.cancel()


async def test_default_bound_is_one_megabyte() -> None:
    assert framing.MAX_MESSAGE == 1 << 20


async def test_junk_is_logged_once_per_connection_with_a_count(fake: FakeAmi) -> None:
    client = AmiClient(_cfg(fake.port, ping_interval=30, ping_timeout=30))
    await client.connect()
    with capture_logs() as logs:
        for i in range(5):
            await fake.send_event(f"not an ami line {i}\r\n\r\n")
        for w in fake.writers:
            w.write(b"Event: Newchannel\r\nCallerIDName: \xff\xfeRavi\r\nUniqueid: 2\r\n\r\n")
            await w.drain()
        await _until(lambda: client.queue.qsize() >= 1)
        await client.close()
        await asyncio.sleep(0)
    events = [e["event"] for e in logs]
    assert events.count("ami_input_skipped") == 1
    assert events.count("ami_input_undecodable") == 1
    total = next(e for e in logs if e["event"] == "ami_input_skipped_total")
    assert (total["messages"], total["undecodable_bytes"]) == (5, 2)
    assert client.queue.get_nowait()["CallerIDName"] == "Ravi"
