"""`make demo`: the whole loop on this machine, then the SMS log and the report.

Lab Asterisk (real, under chroot) + SIPp callers and agent phones + the SMS simulator + the
agent with the repository's rules.yaml. Places calls for each use case of the vendor article,
waits for the delivery receipts, prints the log, and cleans up after itself.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from agent.lab import sipp
from agent.lab.harness import running_loop
from agent.lab.lab import Lab
from agent.logs import mask_number, setup_logging
from agent.models import MessageState

CALLS = [
    ("support ticket (31 s in the Support queue)", sipp.TALK, sipp.DID_SUPPORT,
     {"caller": "+919811000101", "caller_name": "Asha", "duration_ms": 31_500}),
    ("missed call: caller abandons the Billing queue", sipp.TALK, sipp.DID_BILLING,
     {"caller": "+919811000102", "duration_ms": 2000}),
    ("missed call: nobody answers", sipp.REFUSED, sipp.DID_NO_ANSWER,
     {"caller": "+919811000103"}),
]
SERIAL = [  # agent 2002 answers one call at a time
    ("appointment booked (Reply C to cancel)", sipp.TALK, sipp.DID_APPOINTMENT,
     {"caller": "+919811000104", "duration_ms": 1500}),
    ("sales call (agent gets a summary)", sipp.TALK, sipp.DID_SALES,
     {"caller": "+14155550199", "duration_ms": 2500}),
    ("withheld number (no rule may text it)", sipp.TALK, sipp.DID_BILLING, {"anonymous": True, "duration_ms": 1000}),
]


async def _place(label: str, scenario: str, did: str, kw: dict) -> None:
    r = await sipp.place_call(scenario, did, **kw)
    print(f"  {'ok ' if r.ok else 'ERR'} {label}", flush=True)


async def demo(workdir: Path) -> int:
    print("aftercall demo: lab Asterisk + SMS simulator + agent (rules.yaml)\n", flush=True)
    async with running_loop(workdir) as loop:
        print(f"agent up: AMI logged in, dashboard on http://127.0.0.1:{loop.agent.http_port}/")
        print("placing calls (the support call talks for 31 s):", flush=True)

        async def serial() -> None:
            for label, scenario, did, kw in SERIAL:
                await _place(label, scenario, did, kw)

        await asyncio.gather(*(_place(*c) for c in CALLS), serial())

        def settled(rows) -> bool:  # type: ignore[no-untyped-def]
            return len(rows) >= 6 and all(
                r.state in (MessageState.DELIVERED, MessageState.SUPPRESSED,
                            MessageState.DEFERRED, MessageState.FAILED,
                            MessageState.UNDELIVERED) for r in rows)

        rows = await loop.wait_rows(settled, timeout=30)
        print("\nSMS log (numbers masked as in the agent's logs):")
        print(f"{'rule':26} {'to':15} {'status':22} {'seg':>3} {'hangup->submit':>14}  text")
        for r in rows:
            status = r.state.value + (f"/{r.reason}" if r.state is MessageState.SUPPRESSED else "")
            lat = f"{r.hangup_to_submit_ms:.1f} ms" if r.hangup_to_submit_ms is not None else "-"
            text = textwrap.shorten(r.text or "", 70) if r.text else "-"
            print(f"{r.rule:26} {mask_number(r.number) or '-':15} {status:22} {r.segments:>3} "
                  f"{lat:>14}  {text}")
        from agent.reports import build_report, render_report

        d = loop.agent.rules.defaults
        report = await build_report(loop.agent.store, since=None, until=None, rule=None,
                                    gateway=None, price_per_segment=d.price_per_segment,
                                    currency=d.currency)
        print("\nReport:\n" + render_report(report, "table"))
        print(f"handset inbox (simulator): {len(loop.sim.core.messages)} messages received")
    return 0


def main() -> int:
    setup_logging("warning")
    lab = Lab()
    was_running = lab.running()
    workdir = Path(tempfile.mkdtemp(prefix="aftercall-demo-"))
    try:
        return asyncio.run(demo(workdir))
    finally:
        if not was_running:
            lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
