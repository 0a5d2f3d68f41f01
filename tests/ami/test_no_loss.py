"""Overload and stop without loss: a real agent (SQLite, the simulator over SMPP) fed clones of
the lab's recorded calls by a fake Asterisk that, like the real one, drops a reader that stops
reading for its writetimeout and writes every call to Master.csv."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.app import AfterCallAgent
from devkit.harness import handsets, rules_with, until
from agent.settings import Settings
from agent.sim.main import start_sim
from fake_ami import FakeAmi, RecordedCall

REPO = Path(__file__).resolve().parents[2]
# rules.yaml's default limits would (rightly) refuse hundreds of texts a minute.
NO_LIMITS = (("global: 100/1m", "global: 1000000/1m"), ("daily: 2000/1d", "daily: 10000000/1d"))


def _caller(i: int) -> str:
    return f"+9198{i:08d}"


async def test_overload_then_drain_every_completed_call_texted_exactly_once(tmp_path: Path):
    """Calls come faster than the agent can store them: the reader stops, Asterisk drops the
    link, the agent reconnects and recovers the gap from Master.csv. At the end every abandoned
    call (a missed-call-sorry SMS each) has exactly one text, and no call is missing."""
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    fake = FakeAmi()
    fake.write_timeout = 0.1  # Asterisk's default writetimeout
    await fake.start()
    cdr = tmp_path / "Master.csv"
    cdr.touch()
    rules = rules_with(tmp_path, *NO_LIMITS)
    agent = AfterCallAgent(
        Settings(ami_secret=fake.secret, ami_port=fake.port, rules=rules, db=tmp_path / "a.db",
                 http_port=0, agi_port=0, cdr_csv=cdr),
        records_backlog=10, ami_backlog=60)  # a tiny pipeline: overload comes at once
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        # The C heap is trimmed beside the loop while the agent runs (agent.memory).
        assert "heap-trim" in {t.name for t in threading.enumerate()}
        call = RecordedCall("queue_abandoned")
        n = 400
        # The store takes nothing while the calls come: more calls/s than it can store.
        lock = sqlite3.connect(tmp_path / "a.db", timeout=10, isolation_level=None,
                               check_same_thread=False)
        # In a thread: waiting for the lock on this loop would stall whatever shares it (the
        # agent's own writer, mid-transaction, in the overload test) and the lock times out.
        await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
        with cdr.open("a") as fh:
            for i in range(n):
                events, line, _ = call.clone(f"o{i}", _caller(i), time.time())
                fh.write(line + "\n")  # Asterisk writes the CDR at the hangup (batch=no)
                fh.flush()
                await fake.send_bytes(events)  # nobody reading: a dropped client misses them
        assert agent.ami.stats.paused >= 1  # back-pressure reached the socket
        lock.execute("ROLLBACK")
        lock.close()
        expected = {_caller(i) for i in range(n)}
        await until(lambda: set(handsets(sim)) >= expected, 90,
                    show=lambda: (len(set(handsets(sim)) & expected), fake.dropped_slow_readers,
                                   agent.ami.stats.reconnects, agent.pipeline.pending))
        await agent.pipeline.drain(30)
        assert agent.pipeline.pending == 0
        # Asterisk dropped the stalled reader and the gap came back from Master.csv.
        assert fake.dropped_slow_readers >= 1 and agent.ami.stats.reconnects >= 1
        texts = handsets(sim)
        assert all(texts[c] == 1 for c in expected), [c for c in expected if texts[c] != 1]
        rows = [r for r in await agent.store.list_messages() if r.number in expected]
        assert sorted(r.number for r in rows) == sorted(expected)  # one row each, no more
        for i in range(n):  # every call is stored, none lost from memory
            assert await agent.store.get_call(f"o{i}-aftercall-lab-1795937531.36", pbx="default") is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake.stop()
        await sim.stop()
    assert "heap-trim" not in {t.name for t in threading.enumerate()}  # a stopped agent's too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agent_process(tmp_path: Path, fake: FakeAmi, rules: Path, http: int) -> subprocess.Popen:
    env = dict(os.environ, AFTERCALL_AMI_PORT=str(fake.port), AFTERCALL_AMI_SECRET=fake.secret,
               AFTERCALL_RULES=str(rules), AFTERCALL_DB=str(tmp_path / "a.db"),
               AFTERCALL_HTTP=f"127.0.0.1:{http}", AFTERCALL_AGI_PORT="0")
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def _metric(port: int, name: str) -> float | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    body = (await reader.read()).decode()
    writer.close()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_sigterm_with_a_backlog_then_restart_loses_nothing(tmp_path: Path):
    """The database is locked by another writer while calls end: their records wait in memory.
    SIGTERM: the agent tries for a bounded time, keeps what it could not store and exits. The
    next start (database free again) stores and texts every one of them, once, without any
    CDR to recover them from."""
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    fake = FakeAmi()
    await fake.start()
    rules = rules_with(tmp_path, *NO_LIMITS)
    http = _free_port()
    proc = _agent_process(tmp_path, fake, rules, http)
    try:
        await asyncio.wait_for(fake.resynced.wait(), 60)  # logged in, calls in progress known
        lock = sqlite3.connect(tmp_path / "a.db", timeout=10, isolation_level=None,
                               check_same_thread=False)
        # In a thread: waiting for the lock on this loop would stall whatever shares it (the
        # agent's own writer, mid-transaction, in the overload test) and the lock times out.
        await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
        call = RecordedCall("queue_abandoned")
        n = 40
        for i in range(n):
            events, _, _ = call.clone(f"t{i}", _caller(i), time.time())
            await fake.send_bytes(events)
        pending: list[float | None] = [None]

        async def backlog() -> bool:
            pending[0] = await _metric(http, "aftercall_records_pending")
            return pending[0] == n

        async with asyncio.timeout(90):
            while not await backlog():
                await asyncio.sleep(0.5)  # /metrics answers 2 requests/s (agent.web.guard)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=90)
        assert proc.returncode == 0, out[-3000:]
        assert "records_unfinished" in out and "records_kept" in out
        assert not sim.core.messages  # nothing was sent without its row
        lock.execute("ROLLBACK")
        lock.close()

        proc = _agent_process(tmp_path, fake, rules, http)
        expected = {_caller(i) for i in range(n)}
        await until(lambda: set(handsets(sim)) >= expected, 120,
                    show=lambda: len(set(handsets(sim)) & expected))
        texts = handsets(sim)
        assert all(texts[c] == 1 for c in expected)
        await until(lambda: not (tmp_path / "a.db.unstored-records.jsonl").exists(), 10)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.communicate, timeout=60)
        await fake.stop()
        await sim.stop()
