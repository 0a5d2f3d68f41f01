"""End-to-end capacity of one agent: calls/s it sustains with p99 hangup -> submit <= 250 ms.

A load generator clones the lab's recorded calls (tests/fixtures/ami, each with its Master.csv
row) with fresh call ids, caller numbers and timestamps, and streams them at a set rate through
a fake AMI socket (tests/ami/fake_ami.py: like Asterisk, it drops a reader that stops reading
for 100 ms and writes every call to Master.csv) into a real agent (`aftercall run`, its own
process, SQLite with synchronous=FULL) and the real simulator (its own process, receipts on).
Rates ramp; per rate it prints calls offered / stored / texted / delivered, p50/p99
hangup -> submit_sm (the agent's own hangup_to_submit_ms: from the clone's last Hangup
Timestamp to the gateway's accept), the agent's CPU (share of one core) and RSS, and then the
highest rate sustained with p99 <= 250 ms and nothing lost. The peer figures measured in the
same run: the generator's own offered rate (what the machine could push at all) and, after each
rate, two bare durable SQLite commits on the same disk (a neighbour's I/O slows every fsync a
record needs) beside the machine's load. rules.yaml's
limits are lifted (rate limits, the SMSC's TPS 50 and window 10 -> 5000 and 50): this measures
the agent, not the SMSC contract an operator configures.

    .venv/bin/python bench/capacity.py [--rates 50,100,150,200,300] [--seconds 20]
    .venv/bin/python bench/capacity.py --soak 15 --rate 50      # RSS slope, exact counts
    .venv/bin/python bench/capacity.py --soak 6 --rate 50 --gc-types   # what grows, by type
    .venv/bin/python bench/capacity.py --soak 6 --rate 50 --malloc-trim   # allocator slack?
    .venv/bin/python bench/capacity.py --soak 15 --rate 50 --mem-probe   # which allocator grew
    .venv/bin/python bench/capacity.py --soak 6 --rate 50 --drop-at 2,4   # reconnects' cost

The soak's RSS slope is fitted after a warm-up (``--warmup``, 3 minutes by default: caches and
SQLite's page cache fill to their bounds first) and printed beside the slope of the whole run.

Writes bench/results/capacity.json (the soak: bench/results/capacity-soak.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "ami"))
sys.path.insert(0, str(REPO / "bench"))

from devkit.harness import rules_with  # noqa: E402
from latency import bare_commits  # noqa: E402
from fake_ami import FakeAmi, recorded_calls  # noqa: E402

BUDGET_P99_MS = 250.0
# Loaded into the agent's process (as its sitecustomize) by --tracemalloc: after the warm-up it
# takes a snapshot, then every minute writes the allocation sites that grew most since it.
TRACEMALLOC_HOOK = """
import os, threading, time, tracemalloc
out = os.environ.get("BENCH_TRACEMALLOC_OUT")
if out:
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "8")))
    # Imports done late (module code, compiled bytecode) are growth, not a leak.
    skip = [tracemalloc.Filter(False, f) for f in ("<frozen importlib._bootstrap>",
            "<frozen importlib._bootstrap_external>", tracemalloc.__file__, "<unknown>")]
    def snap():
        return tracemalloc.take_snapshot().filter_traces(skip)
    def watch():
        time.sleep(float(os.environ.get("BENCH_TRACEMALLOC_WARMUP", "180")))
        base = snap()
        while True:
            time.sleep(60)
            diff = snap().compare_to(base, "traceback")
            lines = []
            for d in diff[:12]:
                lines.append(f"{d.size_diff / 1024:+.1f} KiB {d.count_diff:+d} blocks")
                lines += ["    " + line for line in d.traceback.format(limit=4)]
            with open(out + ".tmp", "w") as fh:
                fh.write("\\n".join(lines) + "\\n")
            os.replace(out + ".tmp", out)
    threading.Thread(target=watch, daemon=True, name="bench-tracemalloc").start()
"""
# Loaded the same way by --gc-types, cheap enough to leave the agent's pace alone (tracing
# every allocation is not, on a busy machine: the agent falls behind and what grows is its
# backlog): after the warm-up it counts the objects the collector tracks by type, then every
# minute writes the types whose count grew most since, with the interpreter's allocated blocks.
GC_TYPES_HOOK = """
import collections, gc, os, sys, threading, time
out = os.environ.get("BENCH_GC_TYPES_OUT")
if out:
    def census():
        return collections.Counter(f"{getattr(type(o), '__module__', '?')}."
                                   f"{getattr(type(o), '__qualname__', '?')}"
                                   for o in gc.get_objects())
    def watch():
        try:
            count()
        except BaseException as exc:
            with open(out, "w") as fh:
                fh.write(f"census failed: {exc!r}\\n")
            raise
    def name(t):
        return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}"
    def ages(prev, base):
        # id -> (type, minutes seen): an object made after the warm-up and still there at
        # two later censuses outlived its call (an address reused by an object of the same
        # type at each census can pass for one: rare for all but the hottest types).
        now = {}
        for o in gc.get_objects():
            i, t = id(o), type(o)
            if base.get(i) is t:
                continue
            p = prev.get(i)
            now[i] = (t, p[1] + 1 if p is not None and p[0] is t else 0)
        return now
    def count():
        time.sleep(float(os.environ.get("BENCH_GC_TYPES_WARMUP", "180")))
        base, blocks, t0 = census(), sys.getallocatedblocks(), time.monotonic()
        base_ids = {id(o): type(o) for o in gc.get_objects()}
        seen = {}
        while True:
            time.sleep(60)
            now = census()
            seen = ages(seen, base_ids)
            old = collections.Counter(name(t) for t, a in seen.values() if a >= 2)
            grown = sorted(((now[k] - base[k], k) for k in set(now) | set(base)), reverse=True)
            lines = [f"after {(time.monotonic() - t0) / 60:.1f} min: allocated blocks "
                     f"{sys.getallocatedblocks() - blocks:+d}, gc-tracked objects "
                     f"{sum(now.values()) - sum(base.values()):+d}"]
            lines += [f"{n:+d} {k}" for n, k in grown[:15] if n]
            lines += [f"made after the warm-up and alive 2 minutes on: {sum(old.values())}"]
            lines += [f"  {n} {k}" for k, n in old.most_common(15)]
            with open(out + ".tmp", "w") as fh:
                fh.write("\\n".join(lines) + "\\n")
            os.replace(out + ".tmp", out)
    threading.Thread(target=watch, daemon=True, name="bench-gc-types").start()
"""
# Loaded the same way by --malloc-trim: every 30 s the agent hands the C allocator's free
# memory back to the system (glibc's malloc_trim). Growth that this removes is freed memory the
# allocator kept (fragmented heaps and per-thread arenas), not live data.
MALLOC_TRIM_HOOK = """
import ctypes, os, threading, time
if os.environ.get("BENCH_MALLOC_TRIM"):
    libc = ctypes.CDLL("libc.so.6")  # the call releases the GIL
    def trim():
        while True:
            time.sleep(30)
            libc.malloc_trim(0)
    threading.Thread(target=trim, daemon=True, name="bench-malloc-trim").start()
"""
# Loaded the same way by --mem-probe: every 10 s the agent writes one JSON line of what holds its
# memory beside the RSS: glibc malloc (mallinfo2: bytes in its arenas, in use, free; and the
# number of arenas from malloc_info), SQLite's own allocator (sqlite3_status64: bytes in use,
# page cache, and each connection's own page cache), Python's allocator (allocated blocks,
# obmalloc arenas from _debugmallocstats) and the threads. Each step of the RSS can then be
# named by what grew with it.
MEM_PROBE_HOOK = """
import ctypes, json, os, re, sys, tempfile, threading, time
out = os.environ.get("BENCH_MEM_PROBE_OUT")
if out:
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    sq = ctypes.CDLL("libsqlite3.so.0")  # the library _sqlite3 already loaded
    sq.sqlite3_status64.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                    ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    def sqlite(op):
        cur, hi = ctypes.c_int64(), ctypes.c_int64()
        sq.sqlite3_status64(op, ctypes.byref(cur), ctypes.byref(hi), 0)
        return cur.value, hi.value
    tmp = tempfile.mkdtemp()
    def arenas():
        path = os.path.join(tmp, "mi.xml")
        fp = libc.fopen(path.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        xml = open(path).read()
        heaps = re.findall(r'<heap nr="(\\d+)">.*?<system type="current" size="(\\d+)"/>', xml, re.S)
        return [int(size) for _, size in heaps]
    def obmalloc():
        path = os.path.join(tmp, "ob.txt")
        saved = os.dup(2)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.dup2(fd, 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)
        text = open(path).read()
        got = {}
        for key in ("arenas allocated current", "arenas highwater mark", "bytes in allocated blocks",
                    "bytes in available blocks"):
            m = re.search("# " + key + r"\\s*=\\s*([\\d,]+)", text)
            if m:
                got[key] = int(m.group(1).replace(",", ""))
        return got
    import gc, sqlite3
    sq.sqlite3_db_status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    sq.sqlite3_db_readonly.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    conns = []
    def caches():
        # Each open connection's page cache (SQLITE_DBSTATUS_CACHE_USED), labelled by what it
        # is: the sqlite3* handle is the first field after the object header (CPython 3.11).
        got = []
        for c in conns:
            db = ctypes.c_void_p.from_address(id(c) + 16).value
            if not db:
                continue
            cur, hi = ctypes.c_int(), ctypes.c_int()
            sq.sqlite3_db_status(db, 1, ctypes.byref(cur), ctypes.byref(hi), 0)
            ro = sq.sqlite3_db_readonly(db, b"main")
            got.append(("ro" if ro == 1 else "rw", c.total_changes, cur.value))
        return got
    # The collector's passes on the agent's loop: how many per generation, the longest, and
    # the objects it still tracks (a full pass walks them all while the loop waits).
    gc_seen = {"start": 0.0, "n": [0, 0, 0], "max_ms": [0.0, 0.0, 0.0], "collected": [0, 0, 0]}
    def on_gc(phase, info):
        if phase == "start":
            gc_seen["start"] = time.perf_counter()
        else:
            g = info["generation"]
            gc_seen["n"][g] += 1
            gc_seen["collected"][g] += info["collected"]
            gc_seen["max_ms"][g] = max(gc_seen["max_ms"][g],
                                       round((time.perf_counter() - gc_seen["start"]) * 1000, 2))
    import gc as _gc
    _gc.callbacks.append(on_gc)
    def probe():
        t0 = time.monotonic()
        n = 0
        while True:
            mi = libc.mallinfo2()
            row = {"t_min": round((time.monotonic() - t0) / 60, 2),
                   "malloc_arena_bytes": mi.arena, "malloc_mmap_bytes": mi.hblkhd,
                   "malloc_in_use": mi.uordblks, "malloc_free": mi.fordblks,
                   "malloc_arenas_bytes_each": arenas(),
                   "sqlite_memory_used": sqlite(0), "sqlite_pagecache_overflow": sqlite(2),
                   "sqlite_malloc_count": sqlite(9),
                   "py_allocated_blocks": sys.getallocatedblocks(),
                   "threads": sorted(t.name for t in threading.enumerate()),
                   "os_threads": len(os.listdir("/proc/self/task")),
                   "gc_passes_max_ms_collected": [list(gc_seen["n"]), list(gc_seen["max_ms"]),
                                                  list(gc_seen["collected"])],
                   "gc_tracked_frozen": [len(_gc.get_objects()) if n % 6 == 0 else None,
                                         _gc.get_freeze_count()]}
            gc_seen["max_ms"] = [0.0, 0.0, 0.0]
            if n % 6 == 0:
                row["obmalloc"] = obmalloc()
                conns[:] = [o for o in gc.get_objects() if type(o) is sqlite3.Connection]
            row["sqlite_cache_used_by_connection"] = caches()
            with open(out, "a") as fh:
                fh.write(json.dumps(row) + "\\n")
            n += 1
            time.sleep(10)
    threading.Thread(target=probe, daemon=True, name="bench-mem-probe").start()
"""
EDITS = (("global: 100/1m", "global: 100000000/1m"), ("daily: 2000/1d", "daily: 1000000000/1d"),
         ("per_number: 3/1h", "per_number: 1000/1h"), ("tps: 50", "tps: 5000"), ("window: 10", "window: 50"),
         # the agents' own limits (each clone's agent gets a summary per call)
         ("per_number: 100/1h", "per_number: 100000000/1h"),
         ("global: 200/1m", "global: 100000000/1m"), ("daily: 5000/1d", "daily: 1000000000/1d"),
         # the spend caps (2,000 INR a day is 16,666 texts: a soak passes it in 7 minutes)
         ("daily: 2000 ", "daily: 1000000000 "), ("monthly: 40000", "monthly: 1000000000"))
TICK = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


class Proc:
    """CPU (s) and RSS (MB) of a child process, from /proc."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.p = popen
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def rss_by_kind_mb(self) -> dict[str, float]:
        """Resident memory by what maps it (/proc/PID/smaps): the C heap and anonymous maps
        (Python's arenas, malloc's thread arenas: SQLite's page caches live there), the
        database's WAL index, shared libraries and other files. Tells a Python leak (objects,
        see --gc-types) from allocator or SQLite growth."""
        kinds: dict[str, float] = {}
        kind = "anon"
        for line in Path(f"/proc/{self.p.pid}/smaps").read_text().splitlines():
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and not line.endswith(" kB"):
                path = head[5].strip() if len(head) > 5 else ""
                kind = ("anon" if not path else "heap" if path == "[heap]"
                        else "stack" if path.startswith("[stack") else "sqlite-shm"
                        if path.endswith("-shm") else "libs" if ".so" in path
                        else "other" if path.startswith("[") else "files")
            elif line.startswith("Rss:"):
                kinds[kind] = kinds.get(kind, 0.0) + int(line.split()[1]) / 1024
        return {k: round(v, 1) for k, v in sorted(kinds.items())}

    def mappings_kb(self) -> dict[str, tuple[str, int]]:
        """Each mapping's resident kB, by its start address (a heap or arena that grows keeps
        it): (its range and what it maps, kB)."""
        maps: dict[str, tuple[str, int]] = {}
        where = ""
        for line in Path(f"/proc/{self.p.pid}/smaps").read_text().splitlines():
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and not line.endswith(" kB"):
                where = head[0].split("-")[0]
                maps[where] = (f"{head[0]} {head[5].strip() if len(head) > 5 else '[anon]'}", 0)
            elif line.startswith("Rss:"):
                maps[where] = (maps[where][0], int(line.split()[1]))
        return maps

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


class Load:
    def __init__(self, work: Path, fake: FakeAmi) -> None:
        self.fake = fake
        self.cdr = work / "Master.csv"
        self.cdr.touch()
        self.calls = recorded_calls()
        self.n = 0

    async def offer(self, tag: str, rate: float, seconds: float) -> tuple[int, float]:
        """Stream ``rate`` calls/s for ``seconds``; returns (calls offered, achieved rate)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        with self.cdr.open("a") as fh:
            while (now := loop.time()) - start < seconds:
                due = int((now - start) * rate) - sent
                for _ in range(max(0, due)):
                    self.n += 1
                    call = self.calls[self.n % len(self.calls)]
                    events, line, _ = call.clone(f"{tag}x{self.n}", f"+9197{self.n:08d}",
                                                 time.time())
                    fh.write(line + "\n")  # Asterisk writes the CDR at the hangup
                    fh.flush()
                    await self.fake.send_bytes(events)
                    sent += 1
                await asyncio.sleep(TICK)
        return sent, sent / max(1e-9, loop.time() - start)


def counts(db: Path, tag: str) -> dict[str, object]:
    """What the agent stored for one step (calls whose id starts with the step's tag)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        like = f"{tag}x%"
        stored = con.execute("SELECT count(*) FROM calls WHERE call_id LIKE ?", (like,)).fetchone()[0]
        rows = con.execute(
            "SELECT state, hangup_to_submit_ms, submitted_at FROM messages WHERE call_id LIKE ?",
            (like,)
        ).fetchall()
    finally:
        con.close()
    lat = [r[1] for r in rows if r[1] is not None]
    return {
        "stored": stored,
        "messages": len(rows),
        "texted": sum(1 for r in rows if r[2] is not None),
        "delivered": sum(1 for r in rows if r[0] == "delivered"),
        "queued_unsent": sum(1 for r in rows if r[0] == "queued"),
        "lat": lat,
    }


async def settle(db: Path, tag: str, offered: int, timeout: float) -> dict[str, object]:
    """Wait until every offered call is stored and the texts stop moving (or ``timeout``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: dict[str, object] = {}
    stable = 0
    while loop.time() < end:
        c = await asyncio.to_thread(counts, db, tag)
        moving = (c["stored"], c["texted"], c["delivered"]) != (
            last.get("stored"), last.get("texted"), last.get("delivered"))
        last = c
        stable = 0 if moving else stable + 1
        if c["stored"] >= offered and stable >= 4:
            break
        await asyncio.sleep(0.5)
    return last


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="50,100,150,200,300")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--soak", type=float, default=None, metavar="MINUTES")
    ap.add_argument("--rate", type=float, default=100.0, help="with --soak")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="with --soak: the agent traces its allocations and reports what grew "
                         "after the warm-up (slows it; the RSS slope then includes the tracing)")
    ap.add_argument("--gc-types", action="store_true",
                    help="with --soak: the agent counts its objects by type after the warm-up "
                         "and reports the types that grew, and the objects made after the "
                         "warm-up that outlived two more minutes (cheap: the pace is kept)")
    ap.add_argument("--malloc-trim", action="store_true",
                    help="with --soak: the agent returns the C allocator's free memory to the "
                         "system every 30 s (tells allocator slack from live data)")
    ap.add_argument("--mem-probe", action="store_true",
                    help="with --soak: every 10 s the agent records glibc malloc's, SQLite's and "
                         "Python's allocator figures and its threads (the probe is a thread of its "
                         "own: one more malloc arena, from the start); each 10 s the bench notes "
                         "every mapping whose resident size moved")
    ap.add_argument("--drop-at", default="", metavar="MINUTES",
                    help="with --soak: at these minutes (comma-separated) the fake AMI drops the "
                         "agent's link, as Asterisk does a reader that falls behind: the agent "
                         "logs in again and reconciles the gap from Master.csv")
    ap.add_argument("--warmup", type=float, default=3.0, metavar="MINUTES",
                    help="with --soak: the RSS slope is reported after this warm-up (and over "
                         "the whole run beside it)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        smpp, http, web = free_port(), free_port(), free_port()
        env = dict(os.environ, SMPP_PORT=str(smpp), SIM_HTTP_PORT=str(http),
                   AFTERCALL_SIM_PASSWORD="secret")
        sim = subprocess.Popen([sys.executable, "-m", "agent.cli", "smsc-sim",
                                "--smpp-port", str(smpp), "--http-port", str(http)],
                               env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        fake = FakeAmi()
        fake.write_timeout = 0.1  # Asterisk's writetimeout
        await fake.start()
        rules = rules_with(work, *EDITS)
        db = work / "aftercall.db"
        agent_env = dict(env, AFTERCALL_AMI_PORT=str(fake.port), AFTERCALL_AMI_SECRET=fake.secret,
                         AFTERCALL_RULES=str(rules), AFTERCALL_DB=str(db),
                         AFTERCALL_HTTP=f"127.0.0.1:{web}", AFTERCALL_AGI_PORT="0",
                         AFTERCALL_CDR_CSV=str(work / "Master.csv"),
                         AFTERCALL_LOG_LEVEL="warning")
        load = Load(work, fake)
        await asyncio.sleep(1.0)  # the simulator's bind port
        growth = work / "tracemalloc.txt"
        types = work / "gc-types.txt"
        probe = work / "mem-probe.jsonl"
        if args.tracemalloc or args.gc_types or args.malloc_trim or args.mem_probe:
            hook = work / "tm"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(
                (TRACEMALLOC_HOOK if args.tracemalloc else "")
                + (GC_TYPES_HOOK if args.gc_types else "")
                + (MALLOC_TRIM_HOOK if args.malloc_trim else "")
                + (MEM_PROBE_HOOK if args.mem_probe else ""))
            agent_env |= {"PYTHONPATH": f"{hook}:{agent_env.get('PYTHONPATH', '')}",
                          "BENCH_TRACEMALLOC_OUT": str(growth),
                          "BENCH_TRACEMALLOC_WARMUP": str(args.warmup * 60),
                          "BENCH_GC_TYPES_OUT": str(types),
                          "BENCH_GC_TYPES_WARMUP": str(args.warmup * 60),
                          "BENCH_MALLOC_TRIM": "1" if args.malloc_trim else "",
                          "BENCH_MEM_PROBE_OUT": str(probe) if args.mem_probe else ""}
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "--log-level", "warning",
                                  "run"], env=agent_env, cwd=REPO,
                                 stdout=open(work / "agent.log", "w"), stderr=subprocess.STDOUT)
        proc = Proc(agent)
        out: dict[str, object] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "budget": f"p99 hangup->submit <= {BUDGET_P99_MS:g} ms, "
                                            "nothing lost", "steps": []}
        try:
            # logged in and resynced (tracing every allocation makes the start much slower)
            await asyncio.wait_for(fake.resynced.wait(), 300 if args.tracemalloc else 60)
            await asyncio.sleep(1.0)  # the first reconciliation
            if args.soak is not None:
                drops = [float(m) for m in args.drop_at.split(",") if m]
                out["soak"] = await soak(load, proc, db, args.rate, args.soak, args.warmup,
                                         fake, f"http://127.0.0.1:{web}/metrics", drops)
                if growth.exists():
                    out["soak"]["tracemalloc_growth_after_warmup"] = (  # type: ignore[index]
                        growth.read_text().splitlines())
                if probe.exists():
                    out["soak"]["mem_probe_each_10s"] = [  # type: ignore[index]
                        json.loads(line) for line in probe.read_text().splitlines()]
                if types.exists():
                    out["soak"]["gc_type_growth_after_warmup"] = (  # type: ignore[index]
                        types.read_text().splitlines())
            else:
                best = 0.0
                for i, rate in enumerate(float(r) for r in args.rates.split(",")):
                    step = await one_rate(load, proc, db, f"r{i}", rate, args.seconds,
                                          Proc(sim))
                    out["steps"].append(step)  # type: ignore[union-attr]
                    print(json.dumps({k: v for k, v in step.items()}), flush=True)
                    if step["sustained"]:
                        best = max(best, step["offered_per_s"])
                out["highest_sustained_calls_per_s"] = best
                out["ami_reconnects_by_fake_drop"] = fake.dropped_slow_readers
        except BaseException:
            log = (work / "agent.log").read_text(errors="replace").splitlines()
            print("agent log (last lines):", *log[-30:], sep="\n", file=sys.stderr)
            raise
        finally:
            agent.terminate()
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                agent.kill()
            sim.terminate()
            sim.wait(10)
            await fake.stop()
    print(json.dumps({k: v for k, v in out.items() if k != "steps"}, indent=2))
    if "soak" in out:
        sk = out["soak"]
        print(f"RSS slope over the whole run: {sk['rss_slope_mb_per_min_all']} MB/min; "  # type: ignore[index]
              f"after the {sk['warmup_minutes']:g}-minute warm-up (the budget's figure): "  # type: ignore[index]
              f"{sk['rss_slope_mb_per_min']} MB/min")  # type: ignore[index]
    res = REPO / "bench/results"
    res.mkdir(parents=True, exist_ok=True)
    name = "capacity-soak.json" if args.soak is not None else "capacity.json"
    (res / name).write_text(json.dumps(out, indent=2) + "\n")


async def one_rate(load: Load, proc: Proc, db: Path, tag: str, rate: float,
                   seconds: float, sim: Proc | None = None) -> dict[str, object]:
    cpu0, t0 = proc.cpu(), time.monotonic()
    sim0 = sim.cpu() if sim is not None else 0.0
    offered, achieved = await load.offer(tag, rate, seconds)
    busy = time.monotonic() - t0
    cpu_during = (proc.cpu() - cpu0) / busy
    sim_during = (sim.cpu() - sim0) / busy if sim is not None else None
    c = await settle(db, tag, offered, timeout=max(60.0, seconds * 3))
    # The disk's own pace right after the step, as the peer: on a shared machine a neighbour's
    # I/O can make every fsync slow, and a record needs two.
    floor = await asyncio.to_thread(bare_commits, db.with_name(f"floor-{tag}.db"), 100)
    lat = c.pop("lat")
    lost = offered - int(c["stored"])  # type: ignore[arg-type]
    p99 = pct(lat, 99)  # type: ignore[arg-type]
    return {
        "rate": rate, "offered": offered, "offered_per_s": round(achieved, 1), **c,
        "lost": lost,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,  # type: ignore[arg-type]
        "p99_ms": round(p99, 1) if lat else None,
        "agent_cpu_core_share": round(cpu_during, 2), "agent_rss_mb": round(proc.rss_mb(), 1),
        # What the agent spends per call, whatever the machine gave it: a starved agent (a
        # neighbour's load) shows a low core share with a growing backlog, not a high one.
        "agent_cpu_ms_per_call": round(cpu_during * busy / max(1, offered) * 1000, 2),
        "simulator_cpu_core_share": round(sim_during, 2) if sim_during is not None else None,
        "two_bare_commits_p50_ms": round(statistics.median(floor), 2),
        "two_bare_commits_p99_ms": round(pct(floor, 99), 2),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "sustained": bool(lat) and lost == 0 and not c["queued_unsent"] and p99 <= BUDGET_P99_MS,
    }


def scrape(url: str) -> dict[str, float]:
    """The agent's backlog gauges from /metrics (a step of the RSS during a backlog is its
    high-water mark, not a leak)."""
    import urllib.request

    want = ("aftercall_records_pending", "aftercall_ami_queue_depth",
            "aftercall_ami_reconnects_total", "aftercall_heap_trims_total",
            "aftercall_heap_trim_cpu_seconds_total", "aftercall_heap_trim_seconds_max")
    got: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                name = line.split("{")[0].split(" ")[0]
                if name in want:
                    got[name.removeprefix("aftercall_")] = float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return got


async def soak(load: Load, proc: Proc, db: Path, rate: float, minutes: float,
               warmup: float, fake: FakeAmi, metrics_url: str,
               drop_at: list[float]) -> dict[str, object]:
    samples: list[tuple[float, float]] = []
    kinds: list[tuple[float, dict[str, float]]] = []
    # Every mapping that appeared or whose resident size moved by 128 kB or more between two
    # samples: a step of the RSS is then a place (a new malloc arena, the C heap, a Python
    # arena, a file) and a time.
    moves: list[tuple[float, str, str, int, int]] = []  # (min, start, range+what, kB, kB)
    gauges: list[tuple[float, dict[str, float], int]] = []
    dropped: list[float] = []
    maps = proc.mappings_kb()
    load_start = [round(x, 1) for x in os.getloadavg()]
    t0 = time.monotonic()
    offered = 0
    i = 0
    while time.monotonic() - t0 < minutes * 60:
        if drop_at and (time.monotonic() - t0) / 60 >= drop_at[0]:
            drop_at.pop(0)
            for w in fake.writers:
                w.transport.abort()
            fake.writers.clear()
            dropped.append(round((time.monotonic() - t0) / 60, 2))
        n, _ = await load.offer(f"s{i}", rate, 10.0)
        offered += n
        samples.append(((time.monotonic() - t0) / 60, proc.rss_mb()))
        gauges.append((round(samples[-1][0], 2), await asyncio.to_thread(scrape, metrics_url),
                       fake.dropped_slow_readers))
        now = proc.mappings_kb()
        for where in set(now) | set(maps):
            what, kb = now.get(where) or maps[where]
            before, after = maps.get(where, (what, 0))[1], now.get(where, (what, 0))[1]
            if abs(after - before) >= 128:
                moves.append((round(samples[-1][0], 2), where, what, before, after))
        maps = now
        if i % 6 == 5:  # each minute
            kinds.append((round(samples[-1][0], 1), proc.rss_by_kind_mb()))
        i += 1
    load_avg = [round(x, 1) for x in os.getloadavg()]
    stored = texted = 0
    lat: list[float] = []
    for j in range(i):
        c = await settle(db, f"s{j}", 0, timeout=5 if j < i - 1 else 120)
        stored += int(c["stored"])  # type: ignore[arg-type]
        texted += int(c["texted"])  # type: ignore[arg-type]
        lat += c["lat"]  # type: ignore[arg-type]
    ys = [s[1] for s in samples]
    # The first minutes are warm-up (caches, pools, the allocator's arenas, SQLite's page cache
    # filling up to its bound): the slope that says "leak" is the one after them.
    steady = [s for s in samples if s[0] >= warmup] or samples
    return {"rate": rate, "minutes": minutes, "offered": offered, "stored": stored,
            "texted": texted, "lost": offered - stored, "p99_ms": round(pct(lat, 99), 1),
            "rss_mb_first": round(ys[0], 1), "rss_mb_last": round(ys[-1], 1),
            "rss_mb_at_warmup_end": round(steady[0][1], 1),
            "rss_slope_mb_per_min_all": round(slope(samples), 4),
            "warmup_minutes": warmup,
            "rss_slope_mb_per_min": round(slope(steady), 4),
            "rss_samples": [(round(t, 2), round(m, 1)) for t, m in samples],
            "rss_by_kind_mb_each_minute": kinds,
            "mappings_moved_128kb_t_range_what_kb_before_after": sorted(moves),
            # A starved agent falls behind and its backlog's memory lingers: say how busy the
            # machine was.
            "load_avg_1_5_15_at_start": load_start, "load_avg_1_5_15_at_end": load_avg,
            "links_dropped_by_bench_at_min": dropped,
            # The agent's own heap trims (agent.memory): how many, their CPU, the longest wall.
            "heap_trims_at_end": {k: v for k, v in (gauges[-1][1] if gauges else {}).items()
                                  if k.startswith("heap_trim")},
            "backlog_each_10s_min_gauges_slow_reader_drops": gauges,
            "budget_slope": "< 0.05 MB/min (after the warm-up)"}


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares MB per minute."""
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in samples) / max(1e-9, sum((x - mx) ** 2 for x in xs))


if __name__ == "__main__":
    asyncio.run(main())
