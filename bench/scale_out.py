"""Scale out: N agents (1, 2, 4) on one PostgreSQL, fed replayed AMI from K PBXs, against the
SQLite one-agent baseline in the same run (one pass per offered rate).

Each PBX is an AMI server in this process that replays a recorded lab call (an abandoned queue
call, which texts the caller) with fresh ids and a fresh caller per call, to every agent
watching it. Topologies: N=1 one agent on one PBX; N=2 an active/active pair on one PBX (both
agents see every call; the database decides who sends); N=4 two PBXs, a pair on each. Agents
are real `aftercall run` processes; the SMS simulator (SMPP, in this process) counts what
arrives. Offered load: ``--rate`` calls/s for ``--seconds``.

Figures: sustained calls/s (calls whose SMS reached the SMSC / time from first hangup to last
submit_sm), hangup -> submit_sm p50/p99 (hangup: when the PBX wrote the call's last Hangup;
submit: when the simulator received it), duplicates (a caller texted twice) and lost (a call
with no SMS), and on PostgreSQL the round trips per call: the statements the database ran for
the topology's database during the load and its drain (pg_stat_statements, BEGIN and COMMIT
included; startup work excluded), per call and per agent that saw the call. Budget (issue 14): 2 agents on one PostgreSQL >= 100 calls/s, 0 duplicates,
0 lost, p99 <= 50 ms.

    .venv/bin/python bench/scale_out.py [--rates 30,100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ami.transcript import iter_messages  # noqa: E402
from devkit.harness import rules_with  # noqa: E402
from agent.lab.postgres import TempCluster, free_port  # noqa: E402
from agent.logs import setup_logging  # noqa: E402
from agent.sim.main import RunningSim, start_sim  # noqa: E402

LISTCOMMANDS = (REPO / "tests/fixtures/ami_listcommands/least_privilege.txt").read_bytes()
TRANSCRIPT = REPO / "tests/fixtures/ami/queue_abandoned.txt"
SECRET = "bench-secret"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class ReplayPbx:
    """An AMI server standing in for one Asterisk: logs agents in, answers ListCommands and
    Ping, and writes the same events to every agent connected."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self.logins = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> ReplayPbx:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                h = dict(ln.split(": ", 1) for ln in block.decode().split("\r\n") if ": " in ln)
                action, aid = h.get("Action", "").lower(), h.get("ActionID", "")
                if action == "login":
                    self.logins += 1
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n"
                                 "Message: Authentication accepted\r\n\r\n".encode())
                    self.writers.append(writer)
                elif action == "listcommands":
                    writer.write(LISTCOMMANDS.replace(b"ActionID: 1\r\n",
                                                      f"ActionID: {aid}\r\n".encode()))
                else:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send(self, ev: dict[str, str]) -> None:
        data = ("".join(f"{k}: {v}\r\n" for k, v in ev.items()) + "\r\n").encode()
        for w in self.writers:
            w.write(data)


def call_events(template: list[dict[str, str]], pbx: str, i: int, caller: str
                ) -> list[dict[str, str]]:
    out = []
    for ev in template:
        ev = dict(ev)
        for k in ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid", "UniqueID"):
            if k in ev:
                ev[k] = f"{pbx}-{i}-{ev[k]}"
        if ev.get("CallerIDNum") == "+919876543210":
            ev["CallerIDNum"] = caller
        out.append(ev)
    return out


async def run_topology(label: str, db: str, agents_per_pbx: list[int], args: argparse.Namespace,
                       workdir: Path, sim: RunningSim, count: StatementCount | None = None,
                       ) -> dict[str, object]:
    template = [dict(ev) for ev in iter_messages(TRANSCRIPT.read_bytes())]
    pbxes = [await ReplayPbx(f"pbx{k + 1}").start() for k in range(len(agents_per_pbx))]
    rules = rules_with(
        workdir, ("    global: 100/1m ", "    global: off     "),
        ("    daily: 2000/1d ", "    daily: off      "), ("    tps: 50\n", "    tps: 5000\n"),
        ("    window: 10\n", "    window: 100\n"))
    env = {**os.environ, "AFTERCALL_AMI_SECRET": SECRET, "SMPP_PORT": str(sim.smpp_port),
           "SIM_HTTP_PORT": str(sim.http_port), "AFTERCALL_WEBHOOK_SECRET": "bench",
           "AFTERCALL_LOG_LEVEL": "info" if args.logs else "warning"}
    procs: list[asyncio.subprocess.Process] = []
    binds_before = len(sim.smpp.sessions)  # type: ignore[attr-defined]
    for pbx, n in zip(pbxes, agents_per_pbx, strict=True):
        for a in range(n):
            profile = (["-m", "cProfile", "-o", str(args.profile / f"{label}-{pbx.name}-{a}.prof")]
                       if args.profile else [])
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, *profile, "-m", "agent.cli", "run", "--rules", str(rules),
                "--db", db,
                "--agent-name", f"{pbx.name}-{a}", "--pbx", pbx.name, "--ami-port", str(pbx.port),
                "--http", f"127.0.0.1:{free_port()}", "--agi-port", str(free_port()),
                cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=(workdir / f"{pbx.name}-{a}.log").open("wb") if args.logs
                else asyncio.subprocess.DEVNULL))
    total_agents = sum(agents_per_pbx)
    deadline = time.monotonic() + 60
    while (sum(p.logins for p in pbxes) < total_agents
           or len(sim.smpp.sessions) - binds_before < total_agents):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: agents did not come up")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # past the agents' startup work (CDR, outbox scan)
    dbname = db.rsplit("/", 1)[-1]
    if count is not None:
        await count.reset(dbname)

    seen = len(sim.core.messages)
    hangups: dict[str, float] = {}
    calls = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    start = time.monotonic()
    for i in range(calls):
        pbx = pbxes[i % len(pbxes)]
        caller = f"+91981{label_code(label)}{i:05d}"
        evs = call_events(template, pbx.name, i, caller)
        for ev in evs:
            ev["Timestamp"] = f"{time.time():.6f}"
            if ev is evs[-1]:
                hangups[caller.lstrip("+")] = time.time()
            pbx.send(ev)
        # Offered load on a schedule (an open loop), not "next call when the last is sent".
        delay = start + (i + 1) * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 20 == 0:
            await asyncio.sleep(0)
    # Drain: until every call has its SMS, or nothing new has arrived for 10 s.
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < 10:
        got = {m.dest.lstrip("+") for m in sim.core.messages[seen:]} & hangups.keys()
        if len(got) == calls:
            break
        if len(got) != last_count:
            last_count, last_change = len(got), time.monotonic()
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # anything sent twice arrives now
    statements = await count.total(dbname) if count is not None else None
    top = await count.top(dbname, calls) if count is not None and args.statements else None
    msgs = [m for m in sim.core.messages[seen:] if m.dest.lstrip("+") in hangups]
    per = Counter(m.dest.lstrip("+") for m in msgs)
    first: dict[str, datetime] = {}
    for m in msgs:
        first.setdefault(m.dest.lstrip("+"), m.received_at)
    lat = [(first[c].timestamp() - hangups[c]) * 1000 for c in first]
    span = (max(first.values()).timestamp() - min(hangups.values())) if first else 0.0
    for p in procs:
        p.terminate()
    await asyncio.gather(*(p.wait() for p in procs))
    for pbx in pbxes:
        await pbx.stop()
    return {
        "topology": label, "agents": total_agents, "pbxes": len(pbxes),
        "offered_calls_per_s": args.rate, "calls": calls,
        "sustained_calls_per_s": round(len(first) / span, 1) if span else 0.0,
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(pct(lat, 99), 2) if lat else None,
        "duplicates": sum(n - 1 for n in per.values() if n > 1),
        "lost": calls - len(first),  # no SMS by the end of the drain
        **({"round_trips_per_call": round(statements / calls, 1),
            # each call is seen by every agent on its PBX
            "round_trips_per_call_per_agent": round(statements / sum(
                agents_per_pbx[i % len(pbxes)] for i in range(calls)), 1)}
           if statements is not None else {}),
        **({"statements_per_call": top} if top is not None else {}),
    }


class StatementCount:
    """Statements the cluster ran per database: each one an agent's round trip (a function
    called by a statement counts once, as its caller waited once)."""

    def __init__(self, pg: TempCluster) -> None:
        self.pg = pg
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def _db(self, name: str) -> str:
        return f"(SELECT oid FROM pg_database WHERE datname = '{name}')"

    async def reset(self, name: str) -> None:
        await asyncio.to_thread(
            self.pg.psql, f"SELECT pg_stat_statements_reset(0, {self._db(name)}, 0)")

    async def total(self, name: str) -> int:
        out = await asyncio.to_thread(
            self.pg.psql,
            f"SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements WHERE dbid = {self._db(name)}")
        return int(out.strip() or 0)

    async def top(self, name: str, calls: int) -> list[str]:
        """The statements sent most, as ``per call: text`` (the text cut short)."""
        out = await asyncio.to_thread(
            self.pg.psql,
            "SELECT round(calls::numeric / " + str(calls) + ", 2) || ': ' ||"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements"
            f" WHERE dbid = {self._db(name)} ORDER BY calls DESC LIMIT 12")
        return out.strip().splitlines()


def label_code(label: str) -> str:
    return {"sqlite-1": "10", "postgres-1": "11", "postgres-2": "12", "postgres-4": "14"}[label]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="30,100",
                    help="offered calls per second, one pass per rate (comma-separated)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the load lasts")
    ap.add_argument("--only", help="one topology (sqlite-1, postgres-1, postgres-2, postgres-4)")
    ap.add_argument("--statements", action="store_true",
                    help="on PostgreSQL, list the statements sent most (per call)")
    ap.add_argument("--logs", type=Path, help="keep each agent's log in this directory")
    ap.add_argument("--profile", type=Path,
                    help="run each agent under cProfile, its profile written to this directory")
    args = ap.parse_args()
    setup_logging("error")
    passes = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sim = await start_sim(smpp_port=0, http_port=0)
        with TempCluster.under(work / "pg", durable=True,
                               settings=("shared_preload_libraries=pg_stat_statements",)) as pg:
            count = StatementCount(pg)
            try:
                for rate in (float(r) for r in args.rates.split(",")):
                    args.rate = rate
                    results = []
                    tag = f"r{int(rate)}"
                    for label, db, shape in (
                        ("sqlite-1", str(work / f"baseline-{tag}.db"), [1]),
                        ("postgres-1", pg.create_database(f"one_{tag}"), [1]),
                        ("postgres-2", pg.create_database(f"pair_{tag}"), [2]),
                        ("postgres-4", pg.create_database(f"two_pairs_{tag}"), [2, 2]),
                    ):
                        if args.only and label != args.only:
                            continue
                        logs = (args.logs or work) / tag / label
                        logs.mkdir(parents=True, exist_ok=True)
                        res = await run_topology(label, db, shape, args, logs, sim,
                                                 count if label != "sqlite-1" else None)
                        print(json.dumps(res), flush=True)
                        results.append(res)
                    passes.append(results)
            finally:
                await sim.stop()
    if args.only:
        return

    def ratios(results: list[dict[str, object]]) -> dict[str, object]:
        base = results[0]
        return {
            r["topology"]: {  # type: ignore[misc]
                "sustained_ratio": round(r["sustained_calls_per_s"]  # type: ignore[operator]
                                         / base["sustained_calls_per_s"], 2)
                if base["sustained_calls_per_s"] else None,
                "p99_ratio": round(r["p99_ms"] / base["p99_ms"], 2)  # type: ignore[operator]
                if r["p99_ms"] and base["p99_ms"] else None,
            } for r in results[1:]
        }

    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f})",
        "budget": "postgres-2: >= 100 calls/s sustained, 0 duplicates, 0 lost, p99 <= 50 ms",
        "passes": [{"offered_calls_per_s": p[0]["offered_calls_per_s"], "results": p,
                    "vs_sqlite_baseline": ratios(p)} for p in passes],
    }
    print(json.dumps(out, indent=2))
    res_dir = REPO / "bench/results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "scale_out.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
