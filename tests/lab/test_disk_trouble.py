"""Disk trouble with the agent running on the lab: the database locked by another writer, and
the disk full. The agent keeps reading AMI, raises the alarm (/healthz, /metrics, logs), sends
nothing it cannot record, and catches up once the store takes writes again."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from agent.lab import sipp
from devkit.harness import Loop, running_loop, until
from agent.models import MessageState

pytestmark = pytest.mark.lab


async def _get(loop: Loop, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{loop.agent.http_port}{path}") as resp:
        return resp.status, await resp.text()


def _metric(text: str, name: str) -> float:
    [line] = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


async def _busy_call(caller: str) -> None:
    r = await sipp.place_call(sipp.REFUSED, sipp.DID_BUSY, caller=caller)
    assert r.returncode in (0, 1), r.output  # SIPp's caller sees the 486 it expects


def _sent(loop: Loop, caller: str) -> bool:
    return len(loop.handset(caller)) >= 1


async def _through_outage(loop: Loop, before: str, during: list[str], trouble, relief) -> None:  # type: ignore[no-untyped-def]
    """One call before the trouble, calls during it, then relief; checks every step."""
    await _busy_call(before)
    await until(lambda: _sent(loop, before), timeout=30)
    with trouble():
        for caller in during:
            await _busy_call(caller)
        # AMI is still read and every call tracked: the records exist, parked in memory.
        await until(lambda: loop.agent.pipeline.store_failing
                    and loop.agent.pipeline.pending == len(during), timeout=30)
        assert {r.caller for r in loop.records} >= set(during)
        status, body = await _get(loop, "/healthz")
        assert status == 503 and '"store"' in body and "unrecorded_calls" in body
        _, metrics = await _get(loop, "/metrics")
        assert _metric(metrics, "aftercall_calls_unrecorded") == len(during)
        assert _metric(metrics, "aftercall_store_healthy") == 0
        # Nothing reached a handset without a row behind it.
        assert all(loop.handset(c) == [] for c in during)
        relief()
        await until(lambda: all(_sent(loop, c) for c in during), timeout=30)
    rows = await loop.wait_rows(lambda rs: all(
        any(r.number == c and r.state is MessageState.DELIVERED for r in rs) for c in during))
    for caller in [before, *during]:
        assert len(loop.handset(caller)) == 1, caller
        assert len([r for r in rows if r.number == caller]) == 1, caller
    status, _ = await _get(loop, "/healthz")
    assert status == 200
    _, metrics = await _get(loop, "/metrics")
    assert _metric(metrics, "aftercall_calls_unrecorded") == 0


async def test_database_locked_by_another_writer(tmp_path: Path, lab) -> None:
    db = tmp_path / "aftercall.db"
    async with running_loop(tmp_path, db=db) as loop:
        other = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
        released = False

        def release() -> None:
            nonlocal released
            other.execute("ROLLBACK")
            released = True

        @contextlib.contextmanager
        def locked() -> Iterator[None]:
            other.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                if not released:
                    other.execute("ROLLBACK")

        try:
            await _through_outage(loop, "+919811000301", ["+919811000302", "+919811000303"],
                                  locked, release)
        finally:
            other.close()


async def test_disk_full(tmp_path: Path, lab) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        filler = disk / "filler"

        @contextlib.contextmanager
        def full() -> Iterator[None]:
            with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:  # until ENOSPC
                    fh.write(b"\0" * 65536)
                    fh.flush()
            yield

        def free() -> None:
            filler.unlink()

        async with running_loop(tmp_path, db=disk / "aftercall.db") as loop:
            await _through_outage(loop, "+919811000311", ["+919811000312", "+919811000313"],
                                  full, free)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
