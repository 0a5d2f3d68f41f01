"""A year of traffic: reports, the SMS log API and the event loop on a 1M-message database.

Generates a year of realistic data (calls, messages, state history, receipts, links, clicks,
replies) through the store's schema, then measures in one run:

- ``aftercall report`` for 1 day, 30 days and all time (the CLI, wall clock, and the same
  report built in-process), beside the peer: the same per-rule/gateway/state counts as one plain
  GROUP BY over ``messages`` on the same file;
- ``/api/report`` (1 day, 7 days, 30 days, all time) and ``/api/messages`` pages on a running
  agent (fed by a fake AMI peer and the SMSC simulator), with the agent's event-loop lag
  p50/p99/max over those reads (its own probe, /healthz) and its RSS;
- database bytes per message as the previous schema (version 6) stored the same rows, then
  after the store's migration to the compact shapes (and ``aftercall prune --vacuum``), and
  after ``aftercall prune`` of the details older than 180 days.

    .venv/bin/python bench/scale.py [--messages 1000000] [--db PATH] [--reuse]
        [--generated PATH]

``--generated`` starts from a copy of a file ``synth.generate(..., upgrade=False)`` already wrote
(the generation of a million messages takes 10-20 minutes and depends only on the generator).

Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "ami"))

import aiohttp  # noqa: E402
from fake_ami import FakeAmi  # noqa: E402

from agent.reports import build_report  # noqa: E402
from agent.sim.main import start_sim  # noqa: E402
from agent.store.packing import from_micros, micros  # noqa: E402
from agent.store.sqlite import SqliteStore  # noqa: E402
from agent.store.sqlite.reports import ReportReader  # noqa: E402
from agent.store.sqlite.retention import vacuum_file  # noqa: E402
from agent.store.sqlite.synth import ROWS_VERSION, generate  # noqa: E402

PY = sys.executable
RANGES = {"1d": 1, "30d": 30, "all": None}
PEER_SQL = ("SELECT rule, gateway, state, count(*), count(submitted_at), sum(segments)"
            " FROM messages{where} GROUP BY 1, 2, 3")


async def get(s: aiohttp.ClientSession, url: str) -> float:
    """Seconds for one successful GET; the API's rate limit (429) is waited out, not timed."""
    while True:
        t0 = time.perf_counter()
        async with s.get(url) as r:
            body = await r.read()
            if r.status == 429:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            assert r.status == 200, body[:300]
            return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def since(days: int | None, now: datetime) -> str | None:
    return None if days is None else (now - timedelta(days=days)).isoformat()


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def cli_report(db: Path, start: str | None) -> float:
    argv = [PY, "-m", "agent.cli", "report", "--db", str(db), "--format", "json"]
    if start:
        argv += ["--since", start]
    t, _ = timed(lambda: subprocess.run(argv, capture_output=True, check=True, cwd=REPO))
    return t


def run_cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "agent.cli", *argv], capture_output=True, text=True,
                          check=True, cwd=REPO)


def peer(db: Path, start: str | None) -> float:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        where = "" if start is None else " WHERE created_at >= ?"
        # a message's times are integer microseconds (schema 19)
        params = [] if start is None else [micros(datetime.fromisoformat(start))]
        t, _ = timed(lambda: conn.execute(PEER_SQL.format(where=where), params).fetchall())
        return t
    finally:
        conn.close()


async def in_process(db: Path, start: str | None) -> float:
    async with ReportReader(db) as reader:
        t0 = time.perf_counter()
        await build_report(reader, since=datetime.fromisoformat(start) if start else None)
        return time.perf_counter() - t0


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def bytes_by_table(db: Path, n: int) -> dict[str, float]:
    """Bytes per message each table and index takes (SQLite's dbstat), largest first: where
    the budget of 1 KB per message goes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"
                            " ORDER BY 2 DESC").fetchall()
    except sqlite3.OperationalError:  # a sqlite3 built without SQLITE_ENABLE_DBSTAT_VTAB
        return {}
    finally:
        conn.close()
    return {name: round(size / n, 1) for name, size in rows if size / n >= 1}


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


async def agent_phase(db: Path, work: Path, now: datetime, repeat: int) -> dict[str, Any]:
    fake = FakeAmi()
    ami_port = await fake.start()
    sim = await start_sim(smpp_port=0, http_port=0)
    rules = work / "rules.yaml"
    # Retention is measured by the prune step below, not by the agent in the middle of reads.
    rules.write_text((REPO / "rules.yaml").read_text()
                     + "\nretention: {details: 3650d, aggregates: 3650d}\n")
    http = free_port()
    env = {**os.environ, "AFTERCALL_AMI_PORT": str(ami_port), "AFTERCALL_AMI_SECRET": fake.secret,
           "AFTERCALL_RULES": str(rules), "AFTERCALL_DB": str(db),
           "AFTERCALL_HTTP": f"127.0.0.1:{http}", "AFTERCALL_AGI_PORT": str(free_port()),
           "SMPP_PORT": str(sim.smpp_port), "SIM_HTTP_PORT": str(sim.http_port),
           "AFTERCALL_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([PY, "-m", "agent.cli", "run"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{http}"
    out: dict[str, Any] = {"api_report_s": {}, "api_messages_s": {}}
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                try:
                    async with s.get(f"{base}/healthz") as r:
                        if r.status in (200, 503):
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the agent did not start: " + proc.stderr.read().decode()[-2000:]
                                   if proc.stderr else "")
            await asyncio.sleep(2)  # a quiet baseline for the lag probe's window
            t_reads = time.perf_counter()
            for name, days in {"1d": 1, "7d": 7, "30d": 30, "all": None}.items():
                q = "" if days is None else f"?since={since(days, now)}"
                times = [await get(s, f"{base}/api/report{q.replace('+', '%2B')}")
                         for _ in range(repeat)]
                out["api_report_s"][name] = {"median": statistics.median(times), "max": max(times)}
            pages = {"first_page_7d": f"?limit=100&since={since(7, now)}",
                     "first_page_all": "?limit=100",
                     "offset_5000": "?limit=100&offset=5000",
                     "status_failed": "?limit=100&status=failed",
                     "one_number": "?limit=100&number=%2B919800000000"}
            for name, q in pages.items():
                times = [await get(s, f"{base}/api/messages{q.replace('+00:00', '%2B00:00')}")
                         for _ in range(repeat)]
                out["api_messages_s"][name] = {"median": statistics.median(times),
                                               "max": max(times)}
            out["reads_seconds"] = time.perf_counter() - t_reads
            async with s.get(f"{base}/healthz") as r:
                health = await r.json()
            out["event_loop"] = health["checks"]["event_loop"]
            out["healthz_status"] = health["status"]
            out["rss_kb"] = rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        await sim.stop()
        await fake.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, help="where to build the database (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="use --db as it is if it exists")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--generated", type=Path,
                    help="copy this generated, not yet migrated file instead of generating")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aftercall-scale-"))
    db = args.db or work / "year.db"
    result: dict[str, Any] = {"messages": args.messages, "machine": platform.machine(),
                              "cpus": os.cpu_count(), "at": datetime.now(UTC).isoformat()}
    if not (args.reuse and db.exists()):
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
        # The rows as the previous schema stored them; the store's own migration converts
        # them below, as an upgrade does.
        if args.generated:
            shutil.copyfile(args.generated, db)
            with closing(sqlite3.connect(db)) as c:
                end = datetime.fromisoformat(c.execute("SELECT max(created_at) FROM messages")
                                             .fetchone()[0])
            result["generated_from"] = str(args.generated)
        else:
            t, gen = timed(lambda: generate(db, messages=args.messages, days=365,
                                            upgrade=False))
            result["generate_s"] = t
            result["generate_messages_per_s"] = args.messages / t
            print(f"generated {args.messages:,} messages in {t:.0f} s")
            end = gen.last
        vacuum_file(db)  # both shapes measured densely packed, as VACUUM leaves them
        result[f"bytes_per_message_schema{ROWS_VERSION}"] = db_bytes(db) / args.messages
        result[f"bytes_per_message_by_table_schema{ROWS_VERSION}"] = bytes_by_table(
            db, args.messages)
        t0 = time.perf_counter()
        async with SqliteStore(db):
            pass
        result["migrate_s"] = time.perf_counter() - t0
        t, _ = timed(run_cli, ["prune", "--db", str(db), "--before", "2000-01-01", "--vacuum"])
        result["vacuum_s"] = t
        print(f"migrated in {result['migrate_s']:.0f} s, vacuumed in {t:.0f} s")
    else:
        with closing(sqlite3.connect(db)) as c:  # an upgraded file: integer times
            end = from_micros(c.execute("SELECT max(created_at) FROM messages").fetchone()[0])
    # closing(): an open connection keeps the WAL file (a VACUUM's is the whole database) on
    # disk, and db_bytes counts it.
    with closing(sqlite3.connect(db)) as c:
        n = c.execute("SELECT count(*) FROM messages").fetchone()[0]
    now = end
    run_cli(["report", "--db", str(db), "--since", now.date().isoformat()])  # migrate, warm
    result["db_bytes_before"] = db_bytes(db)
    result["bytes_per_message_before"] = db_bytes(db) / n
    result["bytes_per_message_by_table"] = bytes_by_table(db, n)
    old = result.get(f"bytes_per_message_schema{ROWS_VERSION}")
    if old:
        result["bytes_ratio_to_previous_schema"] = result["bytes_per_message_before"] / old
    cli, inproc, peers = {}, {}, {}
    for name, days in RANGES.items():
        start = since(days, now)
        cli[name] = statistics.median(cli_report(db, start) for _ in range(args.repeat))
        inproc[name] = statistics.median([await in_process(db, start)
                                          for _ in range(args.repeat)])
        peers[name] = statistics.median(peer(db, start) for _ in range(args.repeat))
    result["cli_report_s"] = cli
    result["report_in_process_s"] = inproc
    result["peer_plain_group_by_s"] = peers
    result["ratio_report_to_peer"] = {k: inproc[k] / peers[k] for k in RANGES}
    result["agent"] = await agent_phase(db, work, now, args.repeat)
    cutoff = (now - timedelta(days=180)).date().isoformat()
    t, out = timed(run_cli, ["prune", "--db", str(db), "--before", cutoff])
    result["prune_s"] = t
    result["prune_output"] = out.stdout.strip()
    result["db_bytes_after"] = db_bytes(db)
    result["bytes_per_message_after"] = db_bytes(db) / n
    result["bytes_per_message_by_table_after"] = bytes_by_table(db, n)
    _print(result)
    dest = REPO / "bench" / "results" / "scale.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {dest.relative_to(REPO)}")
    if not args.db:
        shutil.rmtree(work, ignore_errors=True)


def _print(r: dict[str, Any]) -> None:
    old = r.get(f"bytes_per_message_schema{ROWS_VERSION}")
    if old:
        print(f"\nschema {ROWS_VERSION}: {old:.0f} B/message; migrated in {r['migrate_s']:.0f} s"
              f" (vacuum {r['vacuum_s']:.0f} s): {r['bytes_per_message_before']:.0f} B/message"
              f" ({r['bytes_ratio_to_previous_schema']:.2f}x)")
    print(f"\n{r['messages']:,} messages; database {r['db_bytes_before'] / 1e6:.0f} MB"
          f" ({r['bytes_per_message_before']:.0f} B/message), after prune of details older"
          f" than 180 days {r['db_bytes_after'] / 1e6:.0f} MB"
          f" ({r['bytes_per_message_after']:.0f} B/message)")
    print("\nreport        CLI wall   in-process   peer GROUP BY   ratio")
    for k in RANGES:
        print(f"  {k:<10} {r['cli_report_s'][k]:8.2f} s {r['report_in_process_s'][k]:10.3f} s"
              f" {r['peer_plain_group_by_s'][k]:13.3f} s {r['ratio_report_to_peer'][k]:7.2f}x")
    a = r["agent"]
    print("\n/api/report   " + "  ".join(f"{k} {v['median']:.3f} s"
                                         for k, v in a["api_report_s"].items()))
    print("/api/messages " + "  ".join(f"{k} {v['median']:.3f} s"
                                       for k, v in a["api_messages_s"].items()))
    lag = a["event_loop"]
    print(f"event loop lag over the reads: p50 {lag.get('p50_ms')} ms, p99 {lag['p99_ms']} ms,"
          f" max {lag['max_ms']} ms ({lag['samples']} samples); agent RSS"
          f" {a['rss_kb']['VmRSS'] / 1024:.0f} MB (peak {a['rss_kb']['VmHWM'] / 1024:.0f} MB)")
    print(f"prune: {r['prune_s']:.1f} s; {r['prune_output']}")


if __name__ == "__main__":
    asyncio.run(main())
