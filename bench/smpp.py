"""Benchmark: SMS/s from SmppGateway through the simulator (separate process), and held TPS.

    python bench/smpp.py [--messages 10000] [--tps 200] [--tps-seconds 10]

Writes bench/results/smpp.json. Budgets (DESIGN.md section 7): >= 1,000 SMS/s on one bind with
window 10; a configured TPS held within 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.gateways.smpp.client import SmppGateway  # noqa: E402
from agent.models import InboundSms, OutboundSms, Receipt  # noqa: E402

SYSTEM_ID = "bench"
PASSWORD = "benchpw"


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass


def start_sim_process() -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, AFTERCALL_SIM_PASSWORD=PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.sim.main", "--smpp-port", "0", "--http-port", "-1",
         "--system-id", SYSTEM_ID, "--receipt-delay", "0.05"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        if line.startswith("SIM_READY"):
            port = int(line.split()[1].split("=")[1])
            # Keep draining so the simulator never blocks on a full pipe.
            threading.Thread(target=_drain, args=(proc,), daemon=True).start()
            return proc, port
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("simulator did not start")


class Counter:
    def __init__(self) -> None:
        self.receipts = 0

    async def on_receipt(self, _: Receipt) -> None:
        self.receipts += 1

    async def on_inbound(self, _: InboundSms) -> None:
        return None


async def run_batch(
    port: int, n: int, *, tps: float | None, concurrency: int = 64
) -> dict[str, Any]:
    counter = Counter()
    gw = SmppGateway("bench", "127.0.0.1", port, SYSTEM_ID, PASSWORD, window=10, tps=tps,
                     enquire_link_interval=None, response_timeout=10)
    await gw.start(counter.on_receipt, counter.on_inbound)
    await gw.wait_bound(10)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    done_at: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await gw.submit(OutboundSms(message_id=str(i), to="+919812345678",
                                            sender="ACMECO", text=f"Thanks for calling, #{i}"))
                done_at.append(time.perf_counter())
            except Exception:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    # Receipts trail the submits by the simulator's receipt delay; give them a moment.
    deadline = time.monotonic() + 5
    while counter.receipts < len(done_at) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await gw.close()
    done_at.sort()
    steady = (len(done_at) - 1) / (done_at[-1] - done_at[0]) if len(done_at) > 1 else 0.0
    return {
        "messages": n, "ok": len(done_at), "failed": failures, "elapsed_s": round(elapsed, 3),
        "sms_per_s": round(len(done_at) / elapsed, 1), "steady_sms_per_s": round(steady, 1),
        "receipts": counter.receipts,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    proc, port = start_sim_process()
    try:
        await run_batch(port, 500, tps=None)  # warm-up: imports, allocator, TCP
        throughput = await run_batch(port, args.messages, tps=None)
        tps_run = await run_batch(port, int(args.tps * args.tps_seconds), tps=args.tps)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    tps_run["configured_tps"] = args.tps
    tps_run["deviation_pct"] = round(100 * (tps_run["sms_per_s"] - args.tps) / args.tps, 2)
    return {
        "benchmark": "smpp",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "setup": "SmppGateway (this process) -> simulator (separate process), loopback, one "
                 "transceiver bind, window 10, receipts on",
        "throughput": throughput,
        "throughput_budget_met": throughput["sms_per_s"] >= 1000 and throughput["failed"] == 0,
        "tps": tps_run,
        "tps_budget_met": abs(tps_run["deviation_pct"]) <= 5 and tps_run["failed"] == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--tps", type=float, default=200.0)
    parser.add_argument("--tps-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "smpp.json")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    t, r = result["throughput"], result["tps"]
    print(f"throughput: {t['sms_per_s']} SMS/s ({t['ok']}/{t['messages']} ok, "
          f"{t['receipts']} receipts) budget >= 1000: "
          f"{'met' if result['throughput_budget_met'] else 'MISSED'}")
    print(f"tps: configured {r['configured_tps']}, held {r['sms_per_s']} "
          f"(steady {r['steady_sms_per_s']}, {r['deviation_pct']:+}%) within 5%: "
          f"{'met' if result['tps_budget_met'] else 'MISSED'}")
    print(f"wrote {args.out}")
    return 0 if result["throughput_budget_met"] and result["tps_budget_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
