"""The AMI client's lifecycle against a scripted AMI peer on loopback."""

from __future__ import annotations

import asyncio
import time
import logging

import pytest
from structlog.testing import capture_logs

from agent.ami.client import AmiClient, AmiConfig, Backoff
from agent.errors import AmiDisconnected, AmiLoginError, ConfigError

from fake_ami import FakeAmi


@pytest.fixture
async def fake():
    f = FakeAmi()
    await f.start()
    yield f
    await f.stop()


async def _until(cond, timeout: float = 5.0) -> None:
    """Wait for a condition the fake peer's callbacks make true (bounded)."""
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


def _cfg(port: int, **kw) -> AmiConfig:
    base = dict(port=port, secret="s3cret", ping_interval=0.2, ping_timeout=0.3,
                backoff_initial=0.01, backoff_max=0.05)
    base.update(kw)
    return AmiConfig(**base)


async def test_wrong_secret_is_a_clear_fatal_error_and_secret_not_leaked(fake, caplog):
    client = AmiClient(_cfg(fake.port, secret="wrong-secret-value"))
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs, pytest.raises(AmiLoginError, match="refused the AMI login") as ei:
        await asyncio.wait_for(client.run(), 5)
    assert fake.logins == 1  # no silent retry loop
    assert "wrong-secret-value" not in str(ei.value)
    assert "wrong-secret-value" not in repr(logs) + caplog.text


async def test_connect_returns_only_when_logged_in(fake):
    client = AmiClient(_cfg(fake.port))
    await client.connect()
    assert client.connected and fake.logins == 1
    await client.close()


async def test_actions_fail_fast_while_disconnected():
    client = AmiClient(_cfg(1))
    with pytest.raises(AmiDisconnected):
        await asyncio.wait_for(client.action({"Action": "Ping"}), 0.5)


async def test_hung_peer_detected_by_ping_watchdog_and_reconnected(fake):
    client = AmiClient(_cfg(fake.port))
    task = asyncio.create_task(client.run())
    try:
        await _until(lambda: fake.logins >= 1)
        fake.answer_pings = False  # Asterisk hangs: TCP stays up, nothing answers
        with capture_logs() as logs:
            await _until(lambda: fake.logins >= 2)
        fake.answer_pings = True
        assert any(e["event"] == "ami_ping_timeout" for e in logs)
        assert client.stats.reconnects >= 1
    finally:
        await client.close()
        task.cancel()


async def test_peer_that_is_not_asterisk(fake):
    fake.banner = b"SSH-2.0-OpenSSH_9.2\r\n"
    client = AmiClient(_cfg(fake.port, login_timeout=0.5))
    with pytest.raises(AmiDisconnected, match="not an Asterisk AMI|did not answer"):
        await client.connect()


async def test_events_go_through_a_bounded_queue_and_handler_errors_are_survived(fake):
    client = AmiClient(_cfg(fake.port, queue_size=3))
    await client.connect()
    for i in range(5):
        await fake.send_event(f"Event: Newchannel\r\nUniqueid: {i}\r\nLinkedid: {i}\r\n\r\n")
    await fake.send_event("Event: Ping\r\n\r\n")
    await _until(lambda: client.stats.events >= 6)
    assert client.queue.qsize() == 3 and client.stats.dropped == 3
    seen = []

    def handler(ev):
        seen.append(ev["Uniqueid"])
        raise ValueError("bad handler")

    consumer = asyncio.create_task(client.consume(handler))
    await _until(lambda: len(seen) >= 3)
    consumer.cancel()
    assert client.stats.handler_errors == 3
    assert client.connected
    await client.close()


def test_plain_ami_to_a_remote_host_is_refused_unless_opted_in():
    with pytest.raises(ConfigError, match="TLS"):
        AmiConfig(host="192.0.2.10", secret="x").check()
    AmiConfig(host="192.0.2.10", secret="x", allow_plain_remote=True).check()
    AmiConfig(host="192.0.2.10", secret="x", tls=True).check()


def test_backoff_is_capped_and_jittered():
    b = Backoff(initial=0.5, maximum=4.0, rng=lambda: 1.0)
    delays = [b.next() for _ in range(8)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and max(delays) == 4.0
    b2 = Backoff(initial=0.5, maximum=4.0, rng=lambda: 0.0)
    assert [b2.next() for _ in range(3)] == [0.25, 0.5, 1.0]


async def test_dropped_events_count_as_a_lost_link(fake):
    """A hole in the event stream must not go unnoticed while TCP stays up: the first drop
    rebuilds the connection, so on_login resyncs and the CDR pass covers the gap from then."""
    logins: list[float | None] = []

    async def on_login(client: AmiClient) -> None:
        logins.append(client.stats.disconnected_at)

    client = AmiClient(_cfg(fake.port, queue_size=2), on_login=on_login)
    task = asyncio.create_task(client.run())
    await _until(lambda: len(logins) == 1)
    before = time.time()
    for i in range(4):  # nobody consumes: two fit, two are dropped
        await fake.send_event(f"Event: Newchannel\r\nUniqueid: {i}\r\nLinkedid: {i}\r\n\r\n")
    await _until(lambda: len(logins) == 2)
    assert client.stats.dropped >= 2 and client.stats.reconnects == 1
    assert logins[1] is not None and logins[1] >= before  # the gap starts at the first drop
    await client.close()
    task.cancel()
