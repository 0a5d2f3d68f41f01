"""Benchmark: AMI ingest with call tracking, against panoramisk's bare parse rate in the same run.

    python bench/ingest.py [--events 200000] [--repeat 3] [--open-calls 10000]

The stream is the lab's real transcripts (tests/fixtures/ami) replicated with fresh
Uniqueid/Linkedid values and moved-on timestamps, calls interleaved a few at a time. Measured:

* bare: bytes -> panoramisk Messages (``agent.ami.transcript.iter_messages``: panoramisk's own
  ``AMIProtocol.data_received`` in 64 KiB reads), events/s;
* full: the same parse plus ``CallTracker.feed`` for every event, events/s, and full/bare;
* memory: tracemalloc of the tracker holding ``--open-calls`` calls in progress (each fed up to
  just before its first hangup event), MB per 10,000 calls.

Best of ``--repeat`` runs for each rate (the machine is shared). Writes bench/results/ingest.json.
Budgets (DESIGN.md section 7): >= 30,000 events/s and >= 0.5x bare; <= 20 MB per 10,000 calls.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.ami.transcript import iter_messages
from agent.calls.tracker import CallTracker
from agent.models import Trigger

AMI = ROOT / "tests" / "fixtures" / "ami"
AGENTS = {"2001": ("Priya", "+919812345678"), "2002": ("Arjun", "+919812345679")}
_ID = re.compile(rb"aftercall-lab-\d+\.\d+")
_TS = re.compile(rb"Timestamp: (\d+\.\d+)")
_HANGUPS = (b"Event: HangupRequest", b"Event: SoftHangupRequest", b"Event: Hangup")

BUDGET_EVENTS_PER_S = 30_000
BUDGET_RATIO = 0.5
BUDGET_MB_PER_10K = 20.0


def _blocks(data: bytes) -> list[bytes]:
    return [b + b"\r\n\r\n" for b in data.split(b"\r\n\r\n") if b.strip()]


def _renamed(data: bytes, prefix: bytes) -> bytes:
    """Every lab id (``aftercall-lab-<epoch>.<n>``) in ``data`` made unique by ``prefix``."""
    return _ID.sub(lambda m: prefix + m.group(0)[14:], data)


def _fresh(block: bytes, copy: int, offset: float) -> bytes:
    """One event of copy number ``copy``: its own ids, its timestamps moved by ``offset``."""
    block = _renamed(block, b"bench-%d-" % copy)
    return _TS.sub(lambda m: b"Timestamp: %.6f" % (float(m.group(1)) + offset), block)


def transcripts() -> list[list[bytes]]:
    return [_blocks(p.read_bytes()) for p in sorted(AMI.glob("*.txt"))]


def build_stream(min_events: int, concurrency: int = 8) -> tuple[bytes, int, int]:
    """(stream, events, calls): copies of the transcripts, ``concurrency`` calls interleaved."""
    sources = transcripts()
    out: list[bytes] = []
    events = calls = 0
    t0 = 2_000_000_000.0
    while events < min_events:
        group = []
        for k in range(concurrency):
            src = sources[calls % len(sources)]
            start = float(_TS.search(src[0]).group(1))  # type: ignore[union-attr]
            offset = t0 - start + k * 0.05
            group.append([_fresh(b, calls, offset) for b in src])
            calls += 1
        # Round-robin merge keeps each call's own order and interleaves the calls.
        longest = max(len(g) for g in group)
        for i in range(longest):
            for g in group:
                if i < len(g):
                    out.append(g[i])
                    events += 1
        t0 += 10.0
    return b"".join(out), events, calls


def bare(data: bytes) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for _ in iter_messages(data):
        n += 1
    return time.perf_counter() - t, n


def full(data: bytes) -> tuple[float, int, int, CallTracker]:
    tracker = CallTracker(agents=AGENTS, region="IN")
    feed = tracker.feed
    t = time.perf_counter()
    n = completed = 0
    for msg in iter_messages(data):
        n += 1
        for rec in feed(msg):
            completed += rec.trigger is Trigger.CALL_COMPLETED
    return time.perf_counter() - t, n, completed, tracker


def memory(open_calls: int) -> dict[str, Any]:
    """Tracker memory with ``open_calls`` calls in progress, each fed up to its first hangup."""
    heads = []
    for src in transcripts():
        cut = next(i for i, b in enumerate(src) if b.startswith(_HANGUPS))
        heads.append(b"".join(src[:cut]))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracker = CallTracker(agents=AGENTS, region="IN")
    for i in range(open_calls):
        head = heads[i % len(heads)]
        for msg in iter_messages(_renamed(head, b"mem-%d-" % i)):
            tracker.feed(msg)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert tracker.in_progress() == open_calls, tracker.in_progress()
    return {
        "calls_in_progress": open_calls,
        "bytes": used,
        "bytes_per_call": round(used / open_calls),
        "mb_per_10k_calls": round(used / open_calls * 10_000 / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--open-calls", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args(argv)

    data, events, calls = build_stream(args.events)
    print(f"stream: {events} events, {calls} calls, {len(data) / 1e6:.1f} MB")
    bare_best = full_best = float("inf")
    completed = 0
    warnings: dict[str, int] = {}
    for r in range(max(1, args.repeat)):
        tb, nb = bare(data)
        tf, nf, completed, tracker = full(data)
        assert nb == nf == events, (nb, nf, events)
        bare_best, full_best = min(bare_best, tb), min(full_best, tf)
        warnings = dict(tracker.warnings)
        print(f"run {r + 1}: bare {events / tb:,.0f} ev/s, full {events / tf:,.0f} ev/s")
    if completed != calls:
        raise SystemExit(f"tracker completed {completed} of {calls} calls")
    bare_rate, full_rate = events / bare_best, events / full_best
    mem = memory(args.open_calls)
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "setup": "lab transcripts replicated with fresh ids, 8 calls interleaved; "
                 "iter_messages (panoramisk AMIProtocol, 64 KiB reads) [+ CallTracker.feed]; "
                 f"best of {args.repeat}",
        "events": events,
        "calls": calls,
        "stream_bytes": len(data),
        "bare_events_per_s": round(bare_rate),
        "full_events_per_s": round(full_rate),
        "full_over_bare": round(full_rate / bare_rate, 3),
        "tracker_us_per_event": round((full_best - bare_best) / events * 1e6, 2),
        "completed_calls": completed,
        "tracker_warnings": warnings,
        "memory": mem,
        "budgets": {
            "events_per_s": BUDGET_EVENTS_PER_S,
            "full_over_bare": BUDGET_RATIO,
            "mb_per_10k_calls": BUDGET_MB_PER_10K,
        },
        "budgets_met": {
            "events_per_s": full_rate >= BUDGET_EVENTS_PER_S,
            "full_over_bare": full_rate / bare_rate >= BUDGET_RATIO,
            "mb_per_10k_calls": mem["mb_per_10k_calls"] <= BUDGET_MB_PER_10K,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"bare parse:       {bare_rate:,.0f} events/s")
    print(f"parse + tracker:  {full_rate:,.0f} events/s ({full_rate / bare_rate:.2f}x bare; "
          f"tracker {result['tracker_us_per_event']} us/event)")
    print(f"memory:           {mem['mb_per_10k_calls']} MB per 10,000 calls in progress "
          f"({mem['bytes_per_call']} bytes/call)")
    print(f"budgets met:      {result['budgets_met']}")
    print(f"wrote {args.out}")
    return 0 if all(result["budgets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
