"""The AMI client's lifecycle against a scripted AMI peer on loopback."""

from __future__ import annotations

import asyncio
import time
import logging

import pytest
from structlog.testing import capture_logs

from agent.ami.client import AmiClient
from agent.ami.config import AmiConfig
from agent.backoff import Backoff
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


def _event(i: int) -> str:
    return f"Event: Newchannel\r\nUniqueid: {i}\r\nLinkedid: {i}\r\n\r\n"


async def test_a_full_queue_stops_the_reading_and_nothing_is_dropped(fake):
    """Back-pressure, not loss: past ``queue_size`` the socket is no longer read; what is sent
    meanwhile waits in TCP and arrives, in order, once the consumer catches up."""
    client = AmiClient(_cfg(fake.port, queue_size=3))
    await client.connect()
    for i in range(3):
        await fake.send_event(_event(i))
        await _until(lambda i=i: client.stats.events == i + 1)
    assert client.stats.paused == 1 and client.queue.qsize() == 3
    for i in range(3, 8):
        await fake.send_event(_event(i))
    await asyncio.sleep(0.2)  # a negative check: nothing may be read while paused
    assert client.stats.events == 3
    seen = []

    def handler(ev):
        seen.append(ev["Uniqueid"])
        raise ValueError("bad handler")

    consumer = asyncio.create_task(client.consume(handler))
    await _until(lambda: len(seen) == 8)
    consumer.cancel()
    assert seen == [str(i) for i in range(8)] and client.stats.dropped == 0
    assert client.stats.handler_errors == 8 and client.connected
    await client.close()


async def test_a_busy_agent_is_not_taken_for_a_dead_link(fake):
    """While events keep arriving (or while the agent itself stopped reading), an unanswered
    Ping proves nothing: only silence does."""
    client = AmiClient(_cfg(fake.port, queue_size=2))
    task = asyncio.create_task(client.run())
    try:
        await _until(lambda: client.connected and client.stats.logins == 1)
        fake.answer_pings = False
        for i in range(30):  # 1.5 s of traffic: several ping intervals and timeouts
            await fake.send_event(_event(i))
            await asyncio.sleep(0.05)
            if client.stats.paused:
                break
        # Reading is now paused behind the full queue; silence from the socket is ours.
        with capture_logs() as logs:
            await asyncio.sleep(1.0)
        assert client.stats.paused == 1
        assert fake.logins == 1 and client.connected
        assert not [e for e in logs if e["event"] in ("ami_ping_timeout", "ami_disconnected")]
    finally:
        await client.close()
        task.cancel()


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


async def test_asterisk_dropping_a_paused_reader_starts_the_gap_when_reading_stopped(fake):
    """Asterisk drops a client that stops reading (writetimeout). Nothing already read is lost,
    the disconnect is logged with its cause, and the gap the CDR must cover starts when the
    reading stopped, not when the drop was noticed."""
    logins: list[float | None] = []

    async def on_login(client: AmiClient) -> None:
        logins.append(client.stats.disconnected_at)

    client = AmiClient(_cfg(fake.port, queue_size=2), on_login=on_login)
    task = asyncio.create_task(client.run())
    await _until(lambda: len(logins) == 1)
    before = time.time()
    for i in range(2):
        await fake.send_event(_event(i))
    await _until(lambda: client.stats.paused == 1)
    paused_at = time.time()
    with capture_logs() as logs:
        for w in list(fake.writers):  # as Asterisk does after writetimeout
            w.transport.abort()
        fake.writers.clear()
        seen = []
        consumer = asyncio.create_task(client.consume(lambda ev: seen.append(ev)))
        await _until(lambda: len(logins) == 2)
    consumer.cancel()
    assert len([e for e in seen if e.get("Event") == "Newchannel"]) == 2  # kept, not dropped
    assert client.stats.dropped == 0 and client.stats.reconnects == 1
    assert logins[1] is not None and before <= logins[1] <= paused_at
    (lost,) = [e for e in logs if e["event"] == "ami_disconnected"]
    assert lost["cause"] == "closed by peer" and lost["behind_s"] > 0
    await client.close()
    task.cancel()
