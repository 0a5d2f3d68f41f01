"""The AMI reader stays live while a year of reports is read: a real agent on a 100,000-message
store, fed calls by a fake AMI peer while the dashboard's all-time report and log pages run."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fake_ami import FakeAmi

from agent.app import AfterCallAgent
from agent.looplag import BUDGET_MAX_S, summarize
from agent.settings import Settings
from agent.sim.main import start_sim

REPO = Path(__file__).resolve().parents[2]
TRANSCRIPT = REPO / "tests/fixtures/ami/queue_answered.txt"
CALLS = 60
_IDS = re.compile(r"^(Uniqueid|Linkedid|DestUniqueid|DestLinkedid): (\S+)", re.M)
_TS = re.compile(r"^Timestamp: \S+", re.M)


def _clone(text: str, i: int) -> str:
    """The recorded call with fresh ids and timestamps (a new call to the tracker)."""
    text = _IDS.sub(lambda m: f"{m.group(1)}: starve{i}-{m.group(2)}", text)
    return _TS.sub(f"Timestamp: {time.time():.6f}", text)


async def test_ami_reads_are_never_starved_by_reports(
    year_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAmi()
    port = await fake.start()
    sim = await start_sim(smpp_port=0, http_port=0)
    monkeypatch.setenv("SMPP_PORT", str(sim.smpp_port))
    monkeypatch.setenv("SIM_HTTP_PORT", str(sim.http_port))
    agent = AfterCallAgent(Settings(ami_secret=fake.secret, ami_port=port, rules=REPO / "rules.yaml",
                                    db=year_copy, http_port=0, agi_port=0))
    # When each of our Hangups was read off the socket and parsed: from the peer's write to the
    # reader's hand-off is how long the event waited to be read (what Asterisk's writetimeout
    # punishes).
    received: dict[str, float] = {}
    enqueue = agent.ami._enqueue  # noqa: SLF001 - the reader's hand-off: the read is done here

    def timed(ev: Mapping[str, Any]) -> None:
        if ev.get("Event") == "Hangup" and str(ev.get("Linkedid", "")).startswith("starve"):
            received.setdefault(str(ev["Uniqueid"]), time.perf_counter())
        enqueue(ev)  # type: ignore[arg-type]

    agent.ami._enqueue = timed  # type: ignore[method-assign]  # noqa: SLF001
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    # The calls are cloned before the clock starts: the test's own work shares the agent's loop.
    text = TRANSCRIPT.read_bytes().decode()  # AMI framing: CRLF, kept as recorded
    chunks = [(_clone(text, i), re.findall(r"^Event: Hangup\r?\n(?:.+\r?\n)*?Uniqueid: (\S+)",
                                           _clone(text, i), re.M)) for i in range(CALLS)]
    sent: dict[str, float] = {}
    reports: list[tuple[float, float]] = []
    try:
        await asyncio.wait_for(agent.ready.wait(), 15)
        await asyncio.wait_for(fake.connected.wait(), 5)
        base = f"http://127.0.0.1:{agent.http_port}"
        lag_from = len(agent.loop_lag._recent)  # noqa: SLF001 - the probe's own samples

        async def read_a_year(http: aiohttp.ClientSession) -> None:
            while True:  # what a dashboard left on "All time" does, back to back
                t0 = time.perf_counter()
                async with http.get(f"{base}/api/report") as r:
                    assert r.status == 200
                    body = await r.json()
                assert body["total"]["total"] >= 100_000
                async with http.get(f"{base}/api/messages?limit=1000&offset=5000") as r:
                    assert r.status == 200
                reports.append((t0, time.perf_counter()))

        async with aiohttp.ClientSession() as http:
            reader = asyncio.create_task(read_a_year(http))
            await asyncio.sleep(0.05)  # let the first report start before the calls do
            for chunk, hangups in chunks:
                for uid in hangups:
                    sent.setdefault(uid, time.perf_counter())
                await fake.send_event(chunk)
                await asyncio.sleep(0.02)
            while len(reports) < 2:
                await asyncio.sleep(0.05)
            reader.cancel()
        lags = [lag for _, lag in list(agent.loop_lag._recent)[lag_from:]]  # noqa: SLF001

        async def stored() -> int:
            def count() -> int:
                with sqlite3.connect(year_copy) as c:
                    return int(c.execute("SELECT count(*) FROM calls WHERE call_id LIKE 'starve%'")
                               .fetchone()[0])
            return await asyncio.to_thread(count)

        deadline = time.monotonic() + 60
        while await stored() < CALLS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the record worker commits on its own schedule
        assert await stored() == CALLS  # every call, none dropped
        assert agent.ami.stats.dropped == 0 and agent.ami.stats.reconnects == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()
        await fake.stop()

    # The calls really arrived while year-long reports were being computed.
    overlapping = [u for u, t in sent.items() if any(a <= t <= b for a, b in reports)]
    assert len(overlapping) >= CALLS // 2
    waits = [received[u] - sent[u] for u in sent]
    assert len(waits) == len(sent) >= CALLS
    s = summarize(lags)
    assert s.samples > 20
    # Asterisk drops a manager client that leaves its events unread for writetimeout (100 ms).
    assert max(waits) <= BUDGET_MAX_S, (
        f"an AMI event waited {max(waits) * 1000:.0f} ms to be read; loop lag meanwhile {s}")
    # The loop's own lag (p99/max, budget 20/100 ms) is a figure of bench/scale.py: on a shared
    # 2-core machine it also measures the neighbours, so it is printed here, not asserted.
    print(f"loop lag while reports ran: {s}")
