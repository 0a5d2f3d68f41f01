"""`make demo`: the whole loop on this machine, then the SMS log and the report.

Lab Asterisk (real, under chroot) + SIPp callers and agent phones + the SMS simulator + the
agent with the repository's rules.yaml. Places calls for each use case of the vendor article,
waits for the delivery receipts, prints the log and the report, and has the appointment caller
reply "C" as a customer would. Run from a terminal, it then prints the dashboard's and the
handset inbox's addresses and keeps everything up until Enter or Ctrl-C; run without a
terminal (CI), it cleans up at once.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from agent.lab import sipp
from devkit.harness import Loop, running_loop
from agent.lab.lab import Lab
from agent.logs import mask_number, setup_logging
from agent.models import MessageState
from agent.sms.numbers import mask_text

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


APPOINTMENT_CALLER = SERIAL[0][3]["caller"]
MISSED_CALLER = CALLS[1][3]["caller"]


async def _customer_replies(loop: Loop) -> None:
    """The appointment caller answers "C" from the handset: the agent tags the call's message
    and texts the cancellation back, which lands in the same inbox."""
    before = len(loop.sim.core.messages)
    sender = next((m.source for m in reversed(loop.sim.core.messages)
                   if m.dest == APPOINTMENT_CALLER), "ACMECO")
    await loop.sim.core.inject_mo(APPOINTMENT_CALLER, sender, "C")
    print(f"\nthe customer {mask_number(APPOINTMENT_CALLER)} replies \"C\" from the handset ...")
    try:
        got = await loop.sim.core.wait_for_messages(before + 1, timeout=15)
    except TimeoutError:
        print("  no answer from the agent within 15 s (see the dashboard's Calls tab)")
        return
    for m in got[before:]:
        print(f"  ... and gets back: \"{m.text}\"")


async def _until_enter() -> None:
    """Enter on the terminal (Ctrl-C cancels the demo the same way: everything is cleaned up)."""
    loop = asyncio.get_running_loop()
    pressed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), pressed.set)  # no thread: Ctrl-C must not wait for one
    try:
        await pressed.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())


def _explore(loop: Loop, token: str) -> str:
    sim = f"http://127.0.0.1:{loop.sim.http_port}"
    cli = "aftercall" if shutil.which("aftercall") else ".venv/bin/aftercall"
    return textwrap.dedent(f"""
        Everything is still running. Explore:
          dashboard      http://127.0.0.1:{loop.agent.http_port}/?token={token}
                         (Calls: why each call did or did not get an SMS; Lists: opt-outs, DND)
          handset inbox  {sim}/sim/inbox   (or: {cli} smsc-sim inbox --url {sim})
          reply as the customer, then watch it arrive in the dashboard and the inbox:
            {cli} smsc-sim reply STOP --from {MISSED_CALLER} --url {sim}
            {cli} smsc-sim reply C --from {APPOINTMENT_CALLER} --url {sim}
            (or the form on the inbox page)
        Press Enter (or Ctrl-C) to stop everything and clean up.""")


async def demo(workdir: Path, *, interactive: bool = False) -> int:
    print("aftercall demo: lab Asterisk + SMS simulator + agent (rules.yaml)\n", flush=True)
    token = secrets.token_urlsafe(16)
    async with running_loop(workdir, dashboard_token=token) as loop:
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
            text = textwrap.shorten(mask_text(r.text), 70) if r.text else "-"
            print(f"{r.rule:26} {mask_number(r.number) or '-':15} {status:22} {r.segments:>3} "
                  f"{lat:>14}  {text}")
        from agent.reports import build_report, render_report

        d = loop.agent.rules.defaults
        report = await build_report(loop.agent.store, since=None, until=None, rule=None,
                                    gateway=None, price_per_segment=d.price_per_segment,
                                    currency=d.currency, timezone=d.timezone)
        print("\nReport:\n" + render_report(report, "table"))
        print(f"handset inbox (simulator): {len(loop.sim.core.messages)} messages received")
        await _customer_replies(loop)
        if interactive:
            print(_explore(loop, token), flush=True)
            await _until_enter()
        print(f"\ndashboard was http://127.0.0.1:{loop.agent.http_port}/ ; cleaning up", flush=True)
    return 0


def main() -> int:
    setup_logging("warning")
    lab = Lab()
    was_running = lab.running()
    workdir = Path(tempfile.mkdtemp(prefix="aftercall-demo-"))
    try:
        # Kept up for exploring only with a person at a terminal; CI cleans up at once.
        return asyncio.run(demo(workdir, interactive=sys.stdin.isatty() and sys.stdout.isatty()))
    except KeyboardInterrupt:
        return 130
    finally:
        if not was_running:
            lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
