"""Hangup -> submit_sm latency, p50/p99: through the lab's real Asterisk with SIPp calls, and
through a replayed AMI stream (no Asterisk) in the same run, beside the physical floor measured
in the same run on the same disk: two bare durable SQLite commits (WAL, synchronous=FULL).

Real path: the clock starts at the Timestamp Asterisk put on the last Hangup event of the call
(call record ``ended_at``) and stops when the simulator received the submit_sm. Replayed path:
a recorded lab transcript is fed to the agent's event handler; the clock starts when the last
Hangup event is handed over and stops when the simulator takes the submit_sm in, read on the
same clock (not when the bench next looks).

    .venv/bin/python bench/latency.py [--calls 20]
    .venv/bin/python bench/latency.py --replayed-only [--calls 80]   # no lab: a fake AMI peer

``--replayed-only`` needs no Asterisk (the AMI link goes to a fake peer on a free port, the
events are replayed into the agent as above), so it runs without the lab and its lock. The
simulator shares the agent's event loop unless ``--sim-process`` puts it in a process of its
own, as a real SMSC is another machine: then its reading and decoding of the submit_sm is not
done by the agent's loop, and the moment it takes a submit_sm in is stamped with the system's
monotonic clock (``time.perf_counter``, CLOCK_MONOTONIC, the same in every process) and
written to the bench through a pipe. The output says which (``simulator``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ami.transcript import iter_messages  # noqa: E402
from agent.app import AfterCallAgent  # noqa: E402
from agent.lab import sipp  # noqa: E402
from devkit.harness import rules_with_quiet_hours, running_loop  # noqa: E402
from agent.logs import setup_logging  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.sim.main import RunningSim, start_sim  # noqa: E402
from scale_out import call_events  # noqa: E402  (the same clone of a recorded call)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def real(n: int, workdir: Path) -> list[float]:
    lat: list[float] = []
    async with running_loop(workdir / "real") as loop:
        for i in range(n):
            caller = f"+9198120{i:05d}"
            r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=caller, duration_ms=200)
            assert r.ok, r.output
            rows = await loop.wait_rows(lambda rs, c=caller: any(
                x.number == c and x.submitted_at for x in rs))
            row = next(x for x in rows if x.number == caller)
            call = await loop.agent.store.get_call(row.call_id, pbx="default")
            (msg,) = loop.handset(caller)
            lat.append((msg.received_at - call.ended_at).total_seconds() * 1000)
    return lat


class SimProcess:
    """The simulator in a process of its own (``--sim-child``): its SMPP and HTTP ports, and
    the time (``time.perf_counter``: CLOCK_MONOTONIC, shared by every process) at which it took
    each submit_sm in, as its pipe reports them."""

    def __init__(self, proc: asyncio.subprocess.Process, smpp_port: int, http_port: int) -> None:
        self.proc, self.smpp_port, self.http_port = proc, smpp_port, http_port
        self.received: asyncio.Queue[float] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> SimProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--sim-child",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        what, smpp, http = line.decode().split()
        if what != "ready":
            raise RuntimeError(f"simulator process said {line!r}")
        return cls(proc, int(smpp), int(http))

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.received.put_nowait(float(line))

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the child stops when its stdin ends
        await asyncio.wait_for(self.proc.wait(), 15)
        await self._reader


async def sim_child() -> None:
    """``--sim-child``: the simulator, printing ``ready SMPP HTTP`` then one line per submit_sm
    part it takes in (its perf_counter at that moment); stops when stdin ends."""
    setup_logging("error")
    sim = await start_sim(smpp_port=0, http_port=0)
    accept_part, out = sim.core.accept_part, sys.stdout

    def stamped(**part: Any) -> str:
        at = time.perf_counter()
        smsc_id = accept_part(**part)
        out.write(f"{at!r}\n")
        out.flush()
        return smsc_id

    sim.core.accept_part = stamped  # type: ignore[method-assign]
    print(f"ready {sim.smpp_port} {sim.http_port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await sim.stop()


@asynccontextmanager
async def labless_loop(workdir: Path, *, sim_process: bool = True
                       ) -> AsyncIterator[tuple[AfterCallAgent, RunningSim | SimProcess]]:
    """The agent in this process, the AMI link to a fake peer (no Asterisk); the simulator in
    a process of its own (``sim_process``) or in this one, on the agent's loop."""
    sys.path.insert(0, str(REPO / "tests" / "ami"))
    from fake_ami import FakeAmi

    workdir.mkdir(parents=True, exist_ok=True)
    fake = FakeAmi()
    await fake.start()
    sim: RunningSim | SimProcess = await (SimProcess.start() if sim_process
                                          else start_sim(smpp_port=0, http_port=0))
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    os.environ["SIM_HTTP_PORT"] = str(sim.http_port)
    rules = rules_with_quiet_hours(REPO / "rules.yaml", workdir / "rules.yaml", night_now=False)
    settings = Settings(ami_secret=fake.secret, ami_port=fake.port, rules=rules,
                        db=workdir / "aftercall.db", http_port=0, agi_port=0)
    agent = AfterCallAgent(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    try:
        await asyncio.wait_for(agent.ready.wait(), 15)
        yield agent, sim
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await sim.stop()
        await fake.stop()


@asynccontextmanager
async def lab_loop(workdir: Path) -> AsyncIterator[tuple[AfterCallAgent, RunningSim]]:
    async with running_loop(workdir, phones=False) as loop:
        yield loop.agent, loop.sim


async def replayed(n: int, workdir: Path, *, lab: bool = True, sim_process: bool = False,
                   commits: list[int] | None = None,
                   stages: list[dict[str, float]] | None = None) -> list[float]:
    """Hangup -> submit_sm times (ms); ``commits`` gets, per call, the store commits made
    between its Hangup and its submit_sm written (the design needs one on this path)."""
    data = (REPO / "tests/fixtures/ami/queue_abandoned.txt").read_bytes()
    events = list(iter_messages(data))
    lat: list[float] = []
    loop_of = lab_loop(workdir / "replay") if lab else labless_loop(
        workdir / "replay", sim_process=sim_process)
    async with loop_of as (agent, sim):
        stamps: dict[str, int] = {}  # stage -> ns, and "#what" -> a count (stage_stamps)
        rows: asyncio.Queue[tuple[float, dict[str, float] | None]] = asyncio.Queue()

        def stage_row(at: float) -> dict[str, float] | None:
            if not stamps or stages is None:
                return None
            stamps["sim_received"] = int(at * 1e9)
            names = ["hangup", *(n for n in STAGES if n in stamps), "sim_received"]
            row = {f"{a}->{b}": (stamps[b] - stamps[a]) / 1e6
                   for a, b in zip(names, names[1:], strict=False)}
            row |= {k[1:]: float(v) for k, v in stamps.items() if k.startswith("#")}
            stamps.clear()
            return row

        if isinstance(sim, SimProcess):
            async def rows_from_pipe() -> None:
                while True:
                    at = await sim.received.get()
                    rows.put_nowait((at, stage_row(at)))

            pipe = asyncio.create_task(rows_from_pipe())
        else:
            # The clock stops where the simulator takes the submit_sm in (same process, same
            # clock): not when this loop next looks.
            accept_part = sim.core.accept_part

            def stamped(**part: Any) -> str:
                at = time.perf_counter()
                rows.put_nowait((at, stage_row(at)))
                return accept_part(**part)

            sim.core.accept_part = stamped  # type: ignore[method-assign]
        with (stage_stamps(stamps, until_written=isinstance(sim, SimProcess))
              if stages is not None else nullcontext()), commits_at_submit(agent) as at_submit:
            try:
                await _replay(agent, events, n, rows, lat, stages, at_submit, commits,
                              stamps if stages is not None else None)
            finally:
                if isinstance(sim, SimProcess):
                    pipe.cancel()
    return lat


@contextmanager
def commits_at_submit(agent: AfterCallAgent) -> Iterator[list[int]]:
    """The store's commit count each time a submit_sm is handed to an SMPP session."""
    from agent.gateways.smpp.session import Session

    seen: list[int] = []
    send_frame = Session.send_frame

    def counted(self: Session, frame: bytes) -> Any:
        seen.append(getattr(agent.store, "commits", 0))
        return send_frame(self, frame)

    Session.send_frame = counted  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Session.send_frame = send_frame  # type: ignore[method-assign]


async def _replay(agent: AfterCallAgent, events: list[dict[str, str]], n: int,
                  rows: asyncio.Queue[tuple[float, dict[str, float] | None]], lat: list[float],
                  stages: list[dict[str, float]] | None, at_submit: list[int],
                  commits: list[int] | None, stamps: dict[str, int] | None) -> None:
    for i in range(n):
        # rules.yaml holds the SMSC to 50 TPS: calls closer than 20 ms apart would measure
        # the token bucket, not the pipeline.
        await asyncio.sleep(0.03)
        caller = f"+9198130{i:05d}"
        while not rows.empty():  # parts of an earlier call's texts
            rows.get_nowait()
        submits = len(at_submit)
        t0 = 0.0
        c0 = 0
        for ev in call_events(events, "bench", i, caller):
            # Fresh timestamps: the rules' max_age must see a call that just ended.
            ev["Timestamp"] = f"{time.time():.6f}"
            if ev.get("Event") == "Hangup":
                if stamps is not None:  # the patched stages stamp from here (--stages)
                    stamps.clear()
                    stamps["hangup"] = time.perf_counter_ns()
                t0 = time.perf_counter()
                c0 = getattr(agent.store, "commits", 0)
            await agent.handle_event(ev)
        at, row = await asyncio.wait_for(rows.get(), 10)
        lat.append((at - t0) * 1000)
        if row is not None and stages is not None:
            stages.append(row)
        if commits is not None:
            commits.append(at_submit[submits] - c0)


#: The stages of the replayed path ``--stages`` stamps, in the order a call meets them.
#: op_queued: the op handed to the writer thread; thread_txn: the thread starts its transaction
#: (its wake-up); store_op_start: the facts are read, the policies judge; rows_start: the
#: rows are written; commit_done: the COMMIT returned (durable).
STAGES = ("record_out", "rules_start", "intake_start", "op_queued", "thread_txn",
          "store_op_start", "rows_start", "commit_done", "loop_answered", "submit_task",
          "smpp_submit", "pdu_write")


@contextmanager
def stage_stamps(stamps: dict[str, int], *, until_written: bool = False) -> Iterator[None]:
    """Patch the path to stamp (perf_counter_ns) the first time each stage is met after
    ``stamps`` was cleared, and count the loop's wake-ups (selector polls) and the thread
    hops back to it (call_soon_threadsafe) in between (``until_written``: only until the
    submit_sm is written, when the simulator's read is another process's): for profiling,
    not for the figures."""
    from agent.dispatch.intake import Intake
    from agent.dispatch.sender import Sender
    from agent.gateways.smpp.client import SmppGateway
    from agent.gateways.smpp.session import Session
    from agent.loop.pipeline import RecordPipeline as Pipeline
    from agent.store.sqlite import intake as sqlite_intake
    from agent.store.sqlite import writer

    def at(name: str) -> None:
        if stamps:
            stamps.setdefault(name, time.perf_counter_ns())

    patched: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, name: str, *, coro: bool) -> None:
        orig = getattr(owner, attr)
        patched.append((owner, attr, orig))
        if coro:
            async def stamped_coro(*a: Any, **kw: Any) -> Any:
                at(name)
                return await orig(*a, **kw)
            setattr(owner, attr, stamped_coro)
        else:
            def stamped(*a: Any, **kw: Any) -> Any:
                at(name)
                return orig(*a, **kw)
            setattr(owner, attr, stamped)

    wrap(Pipeline, "put", "record_out", coro=True)
    wrap(Pipeline, "_decide", "rules_start", coro=False)
    wrap(Intake, "handle", "intake_start", coro=True)
    wrap(writer.StoreWriter, "_write_now", "op_queued", coro=True)
    wrap(Intake, "_judge", "store_op_start", coro=False)
    wrap(sqlite_intake, "write_record", "rows_start", coro=False)
    wrap(Sender, "send_claimed", "submit_task", coro=True)
    wrap(SmppGateway, "submit", "smpp_submit", coro=True)
    # Stamped as the PDU is handed to the socket: a simulator in its own process may read it
    # before the agent's send() returns (the wake-up of its reader can preempt the agent).
    wrap(Session, "_queue", "pdu_write", coro=False)
    orig_tx = writer._transaction

    def tx(*a: Any, **kw: Any) -> Any:
        at("thread_txn")
        out = orig_tx(*a, **kw)
        at("commit_done")
        return out

    writer._transaction = tx
    wrap(writer.StoreWriter, "_answer", "loop_answered", coro=False)
    loop = asyncio.get_running_loop()
    select, threadsafe = loop._selector.select, loop.call_soon_threadsafe  # type: ignore[attr-defined]

    def counting() -> bool:
        return bool(stamps) and not (until_written and "pdu_write" in stamps)

    def counted_select(*a: Any, **kw: Any) -> Any:
        if counting():
            stamps["#loop_wakeups"] = stamps.get("#loop_wakeups", 0) + 1
        return select(*a, **kw)

    def counted_threadsafe(*a: Any, **kw: Any) -> Any:
        if counting():
            stamps["#thread_hops_to_loop"] = stamps.get("#thread_hops_to_loop", 0) + 1
        return threadsafe(*a, **kw)

    loop._selector.select = counted_select  # type: ignore[attr-defined]
    loop.call_soon_threadsafe = counted_threadsafe  # type: ignore[method-assign]
    try:
        yield
    finally:
        for owner, attr, orig in reversed(patched):
            setattr(owner, attr, orig)
        writer._transaction = orig_tx
        loop._selector.select = select  # type: ignore[attr-defined]
        del loop.call_soon_threadsafe


def bare_commits(path: Path, n: int = 200) -> list[float]:
    """The physical floor of the path: two durable SQLite commits (WAL, synchronous=FULL, as
    the store runs), each a one-row insert, timed n times on the same disk in the same run."""
    import sqlite3

    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        for _ in range(2):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
            con.execute("COMMIT")
        out.append((time.perf_counter() - t0) * 1000)
    con.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--replayed-only", action="store_true",
                    help="no lab: only the replayed path (--calls of them), fake AMI peer")
    ap.add_argument("--stages", action="store_true",
                    help="also stamp each stage of the replayed path (patched in: profiling "
                         "figures, a little slower) and print their medians")
    ap.add_argument("--sim-process", action="store_true",
                    help="with --replayed-only: the simulator in a process of its own (as a "
                         "real SMSC is another machine), not on the agent's event loop")
    ap.add_argument("--sim-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sim_child:
        await sim_child()
        return
    setup_logging("error")
    sim_process = args.replayed_only and args.sim_process
    with tempfile.TemporaryDirectory() as tmp:
        rl = [] if args.replayed_only else await real(args.calls, Path(tmp))
        on_path: list[int] = []
        stages: list[dict[str, float]] | None = [] if args.stages else None
        pl = await replayed(args.calls if args.replayed_only else args.calls * 4, Path(tmp),
                            lab=not args.replayed_only, sim_process=sim_process,
                            commits=on_path, stages=stages)
        floor = bare_commits(Path(tmp) / "floor.db")
    out: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if rl:
        out["real_asterisk"] = {"calls": len(rl), "p50_ms": round(statistics.median(rl), 2),
                                "p99_ms": round(pct(rl, 99), 2), "budget": "p50<=10, p99<=50"}
    out |= {
        "simulator": ("its own process (a real SMSC is another machine)" if sim_process
                      else "in the agent's process, on its event loop"),
        "replayed_ami": {"calls": len(pl), "p50_ms": round(statistics.median(pl), 2),
                         "p99_ms": round(pct(pl, 99), 2), "budget": "p50<=2, p99<=10",
                         "store_commits_hangup_to_submit_p50": statistics.median(on_path)},
        "two_bare_durable_commits": {"p50_ms": round(statistics.median(floor), 3),
                                     "p99_ms": round(pct(floor, 99), 3)},
    }
    if stages:
        keys = dict.fromkeys(k for row in stages for k in row)
        out["replayed_stages_median"] = {
            k: round(statistics.median(row.get(k, 0.0) for row in stages), 3) for k in keys}
    out["replayed_p50_over_two_commits"] = round(
        statistics.median(pl) / statistics.median(floor), 1)
    print(json.dumps(out, indent=2))
    res = REPO / "bench/results"
    res.mkdir(parents=True, exist_ok=True)
    name = "latency-replayed.json" if args.replayed_only else "latency.json"
    (res / name).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
