"""The AMI reader stays live while a year of reports is read: a real agent on a 100,000-message
store, fed calls by a fake AMI peer while the dashboard's all-time report and log pages run.

The peer runs on its own thread and event loop, as Asterisk is its own process: it goes on
writing while the agent's loop is busy, so how long an event waited to be read is measured
even when that loop stalls (a peer on the agent's loop could not write during a stall, and
would see none). The same calls are first sent with no report running: that quiet phase, in
the same run, says what the machine itself adds (a shared 2-core machine under load delays
reads by 100-175 ms with no report at all)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
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
CALLS = 60  # at least, sent while reports run: the peer goes on until two reports are done
QUIET_CALLS = 20  # sent before, with no report running
# A report computed on the agent's loop holds every event sent during one of its queries (0.3-
# 0.8 s each here): about half the reads then wait past Asterisk's writetimeout, where machine
# noise (counted on top of the quiet phase) delays a few.
LATE_SHARE = 0.2
_IDS = re.compile(r"^(Uniqueid|Linkedid|DestUniqueid|DestLinkedid): (\S+)", re.M)
_TS = re.compile(r"^Timestamp: \S+", re.M)


class _PeerThread:
    """An event loop on its own thread, for the AMI peer: ``await peer.run(coro)`` runs ``coro``
    there and waits for it from the agent's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-asterisk",
                                        daemon=True)

    async def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    @classmethod
    def started(cls) -> Iterator[_PeerThread]:
        peer = cls()
        peer._thread.start()
        try:
            yield peer
        finally:
            peer.loop.call_soon_threadsafe(peer.loop.stop)
            peer._thread.join(10)
            peer.loop.close()


@pytest.fixture
def peer() -> Iterator[_PeerThread]:
    yield from _PeerThread.started()


def _clone(text: str, i: int) -> str:
    """The recorded call with fresh ids and timestamps (a new call to the tracker)."""
    text = _IDS.sub(lambda m: f"{m.group(1)}: starve{i}-{m.group(2)}", text)
    return _TS.sub(f"Timestamp: {time.time():.6f}", text)


async def test_ami_reads_are_never_starved_by_reports(
    year_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: _PeerThread
) -> None:
    fake = FakeAmi()
    port = await peer.run(fake.start())
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
    text = TRANSCRIPT.read_bytes().decode()  # AMI framing: CRLF, kept as recorded
    hangup = re.compile(r"^Event: Hangup\r?\n(?:.+\r?\n)*?Uniqueid: (\S+)", re.M)
    sent: dict[str, float] = {}  # written by the peer's thread
    reports: list[tuple[float, float]] = []
    quiet_uids: list[str] = []
    busy_uids: list[str] = []

    async def send(first: int, uids: list[str], done: Callable[[int], bool]) -> None:
        """On the peer's loop: call after call, 20 ms apart, until ``done(calls sent)``."""
        i = first
        while not done(i - first):
            chunk = _clone(text, i)
            hangups = hangup.findall(chunk)
            now = time.perf_counter()
            for uid in hangups:
                sent.setdefault(uid, now)
            uids.extend(hangups)
            await fake.send_event(chunk)
            await asyncio.sleep(0.02)
            i += 1

    async def all_read(uids: list[str]) -> None:
        while not all(u in received for u in uids):
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(agent.ready.wait(), 15)
        await asyncio.wait_for(peer.run(fake.connected.wait()), 5)
        base = f"http://127.0.0.1:{agent.http_port}"
        lag_from = len(agent.loop_lag._recent)  # noqa: SLF001 - the probe's own samples

        # The quiet phase: the same traffic, no report.
        await peer.run(send(0, quiet_uids, lambda n: n >= QUIET_CALLS))
        await asyncio.wait_for(all_read(quiet_uids), 30)
        lag_reports_from = len(agent.loop_lag._recent)  # noqa: SLF001

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
            # Sending goes on through whole reports: every query has reads arriving during it.
            await peer.run(send(QUIET_CALLS, busy_uids,
                                lambda n: n >= CALLS and len(reports) >= 2))
            reader.cancel()
        await asyncio.wait_for(all_read(busy_uids), 30)
        calls = len({u.split("-")[0] for u in sent})
        recent = [lag for _, lag in list(agent.loop_lag._recent)]  # noqa: SLF001
        quiet_lags, lags = recent[lag_from:lag_reports_from], recent[lag_reports_from:]

        async def stored() -> int:
            def count() -> int:
                with sqlite3.connect(year_copy) as c:
                    return int(c.execute("SELECT count(*) FROM calls WHERE call_id LIKE 'starve%'")
                               .fetchone()[0])
            return await asyncio.to_thread(count)

        deadline = time.monotonic() + 60
        while await stored() < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # the record worker commits on its own schedule
        assert await stored() == calls  # every call, none dropped
        assert agent.ami.stats.dropped == 0 and agent.ami.stats.reconnects == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()
        await peer.run(fake.stop())

    quiet = [received[u] - sent[u] for u in quiet_uids]
    busy = [received[u] - sent[u] for u in busy_uids]
    # The calls really arrived while year-long reports were being computed.
    overlapping = [u for u in busy_uids if any(a <= sent[u] <= b for a, b in reports)]
    assert len(overlapping) >= len(busy_uids) // 2
    assert len(busy) >= CALLS and len(quiet) >= QUIET_CALLS
    s, q = summarize(lags), summarize(quiet_lags)
    # Asterisk drops a manager client after 100 ms unread. What the machine itself adds (its
    # worst read in the quiet phase) is allowed on top; a report that held the loop would make
    # about half the reads late, noise a few.
    bound = BUDGET_MAX_S + max(quiet)
    late = [w for w in busy if w > bound]
    figures = (f"AMI reads waited max {max(busy) * 1000:.0f} ms while reports ran, "
               f"{max(quiet) * 1000:.0f} ms with none; {len(late)} of {len(busy)} past "
               f"{bound * 1000:.0f} ms; loop lag {s}, quiet {q}")
    assert len(late) <= LATE_SHARE * len(busy), f"AMI reads waited for reports: {figures}"
    assert s.samples > 20
    # The loop's own lag (budget p99 20 ms / max 100 ms) is a figure of bench/scale.py: on a
    # shared 2-core machine it also measures the neighbours, so it is printed here, not asserted.
    print(figures)
