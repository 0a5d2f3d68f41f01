"""Benchmark: SMS/s from SmppGateway through the simulator (separate process), beside Kannel
and a no-op client on the same simulator, and held TPS.

    python bench/smpp.py [--messages 10000] [--kannel-messages 5000] [--tps 200] [--tps-seconds 10]

Three clients, one bind each, window 10, receipts on, each against a fresh simulator process:
- aftercall: SmppGateway in this process;
- Kannel 1.4.5 (Debian's bearerbox + smsbox, gateway_conf/kannel.conf): messages go in through
  sendsms (64 concurrent requests, as an application would), a submit counts when Kannel
  reports the SMSC's submit_sm_resp (DLR type 8) at a dlr-url here;
- the simulator's ceiling: a client that writes pre-encoded submit_sm frames and only counts
  the responses, so we know which side limits.

Writes bench/results/smpp.json. Budgets (DESIGN.md section 7): >= 1,000 SMS/s on one bind with
window 10; a configured TPS held within 5%; issue 13: aftercall >= 1.5x Kannel.
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

from agent.gateways.smpp import pdu as P  # noqa: E402
from agent.gateways.smpp.client import SmppGateway  # noqa: E402
from agent.gateways.smpp.sm import make_submit_parts  # noqa: E402
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
        [sys.executable, "-m", "agent.cli", "smsc-sim", "--smpp-port", "0", "--http-port", "-1",
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
    await gw.wait_ready(10)
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


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


async def run_noop(port: int, n: int, window: int = 10) -> dict[str, Any]:
    """The simulator's ceiling: bind, then keep ``window`` submit_sm in flight from frames
    encoded up front, reading only the length of each response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(P.encode(P.BindTransceiver(1, system_id=SYSTEM_ID, password=PASSWORD)))
    head = await reader.readexactly(16)
    await reader.readexactly(int.from_bytes(head[:4], "big") - 16)
    [part] = make_submit_parts(source_addr="ACMECO", destination_addr="919812345678",
                               text="Thanks for calling, #1", ref=0)
    frame = P.encode(part)
    frames = [frame[:12] + (i + 2).to_bytes(4, "big") + frame[16:] for i in range(n)]
    start = time.perf_counter()
    sent = answered = 0
    while answered < n:
        while sent < n and sent - answered < window:
            writer.write(frames[sent])
            sent += 1
        head = await reader.readexactly(16)
        await reader.readexactly(int.from_bytes(head[:4], "big") - 16)
        if int.from_bytes(head[4:8], "big") == P.CommandId.SUBMIT_SM_RESP:
            answered += 1
        else:  # a receipt (deliver_sm): acknowledge it as a client must
            seq = head[12:16]
            writer.write((17).to_bytes(4, "big") + int(P.CommandId.DELIVER_SM_RESP).to_bytes(4, "big")
                         + bytes(4) + seq + b"\x00")
    elapsed = time.perf_counter() - start
    writer.close()
    return {"messages": n, "ok": answered, "elapsed_s": round(elapsed, 3),
            "sms_per_s": round(answered / elapsed, 1)}


async def run_kannel(port: int, n: int, workdir: Path, concurrency: int = 64) -> dict[str, Any]:
    """Kannel's bearerbox as the SMPP client: n messages through smsbox's sendsms, each
    done when Kannel reports the SMSC's submit_sm_resp (DLR type 8) back to us."""
    import aiohttp
    from aiohttp import web

    sys.path.insert(0, str(ROOT / "tests" / "gateways"))
    from kannel_peer import PASSWORD as K_PASSWORD
    from kannel_peer import USERNAME as K_USERNAME
    from kannel_peer import running_kannel

    acked: list[float] = []
    receipts = 0
    all_acked = asyncio.Event()

    async def dlr(request: web.Request) -> web.Response:
        nonlocal receipts
        if request.query.get("type") == "8":
            acked.append(time.perf_counter())
            if len(acked) >= n:
                all_acked.set()
        elif request.query.get("type") == "1":
            receipts += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/dlr", dlr)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    dlr_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    dlr_url = f"http://127.0.0.1:{dlr_port}/dlr?type=%d"
    failures = 0
    try:
        async with running_kannel(workdir, port, smsc_user=SYSTEM_ID, smsc_password=PASSWORD,
                                  extra={"core": {"log-level": "3"},
                                         "smsbox": {"log-level": "3"}}) as kannel, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(n):
                queue.put_nowait(i)

            async def feed() -> None:
                nonlocal failures
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    params = {"username": K_USERNAME, "password": K_PASSWORD, "from": "ACMECO",
                              "to": "+919812345678", "text": f"Thanks for calling, #{i}",
                              "dlr-mask": "9", "dlr-url": dlr_url}
                    async with http.get(kannel.sendsms_url, params=params) as r:
                        await r.read()
                        if r.status != 202:
                            failures += 1

            start = time.perf_counter()
            await asyncio.gather(*(feed() for _ in range(concurrency)))
            try:
                await asyncio.wait_for(all_acked.wait(), 120)
            except TimeoutError:
                pass
            elapsed = (acked[-1] if acked else time.perf_counter()) - start
            deadline = time.monotonic() + 5
            while receipts < len(acked) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    return {"messages": n, "ok": len(acked), "failed": failures, "elapsed_s": round(elapsed, 3),
            "sms_per_s": round(len(acked) / elapsed, 1) if elapsed > 0 else 0.0,
            "receipts": receipts}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    proc, port = start_sim_process()
    try:
        await run_batch(port, 500, tps=None)  # warm-up: imports, allocator, TCP
        throughput = await run_batch(port, args.messages, tps=None)
        tps_run = await run_batch(port, int(args.tps * args.tps_seconds), tps=args.tps)
    finally:
        stop(proc)
    proc, port = start_sim_process()
    try:
        await run_noop(port, 500)
        ceiling = await run_noop(port, args.messages)
    finally:
        stop(proc)
    kannel: dict[str, Any] | None = None
    aftercall_same_n: dict[str, Any] | None = None
    if args.kannel_messages:
        proc, port = start_sim_process()
        try:
            with tempfile.TemporaryDirectory() as d:
                kannel = await run_kannel(port, args.kannel_messages, Path(d))
        finally:
            stop(proc)
        proc, port = start_sim_process()
        try:  # aftercall again, same count and a fresh simulator, right beside Kannel's run
            aftercall_same_n = await run_batch(port, args.kannel_messages, tps=None)
        finally:
            stop(proc)
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
        "simulator_ceiling": ceiling,
        "aftercall_vs_ceiling": round(throughput["sms_per_s"] / ceiling["sms_per_s"], 3),
        "kannel": kannel,
        "aftercall_beside_kannel": aftercall_same_n,
        "aftercall_vs_kannel": (round(aftercall_same_n["sms_per_s"] / kannel["sms_per_s"], 2)
                                if kannel and aftercall_same_n and kannel["sms_per_s"] else None),
        "tps": tps_run,
        "tps_budget_met": abs(tps_run["deviation_pct"]) <= 5 and tps_run["failed"] == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--kannel-messages", type=int, default=5_000,
                        help="0 skips the Kannel run")
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
    c = result["simulator_ceiling"]
    print(f"simulator ceiling (no-op client, window 10): {c['sms_per_s']} SMS/s; aftercall "
          f"reaches {result['aftercall_vs_ceiling']:.0%} of it")
    if result["kannel"]:
        k, a = result["kannel"], result["aftercall_beside_kannel"]
        print(f"Kannel 1.4.5 -> simulator: {k['sms_per_s']} SMS/s ({k['ok']}/{k['messages']} "
              f"acknowledged, {k['receipts']} receipts); aftercall, same count: "
              f"{a['sms_per_s']} SMS/s; ratio {result['aftercall_vs_kannel']}x (goal >= 1.5x)")
    print(f"tps: configured {r['configured_tps']}, held {r['sms_per_s']} "
          f"(steady {r['steady_sms_per_s']}, {r['deviation_pct']:+}%) within 5%: "
          f"{'met' if result['tps_budget_met'] else 'MISSED'}")
    print(f"wrote {args.out}")
    return 0 if result["throughput_budget_met"] and result["tps_budget_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
