"""`aftercall lab up|down|status|record|call`: the local Asterisk lab (a Debian sid root under
chroot on loopback) and its SIPp calls. The lab drives Asterisk and SIPp; it knows nothing of
the agent."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.commands.exits import Exit
from agent.errors import LabError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("lab", help="the local Asterisk lab (Debian sid root under chroot)")
    p.add_argument("action", choices=["up", "down", "status", "record", "call"])
    p.add_argument("--scenario", default=None, help="with record/call: one scenario name")
    p.add_argument("--dialplan", default="ours",
                   help="with up/record/call: the dialplan style (ours, freepbx, vanilla); "
                        "switching a running lab is a reload")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.lab.lab import Lab

    lab = Lab()
    # Provisioning and starting block (debootstrap, chroot, waiting for ports) right on this
    # loop: nothing else runs on it, and Ctrl-C interrupts them where they are.
    if args.action == "up":
        t = lab.up(dialplan=args.dialplan)
        print(json.dumps({"lab": "up", "dialplan": args.dialplan,
                          **{k: round(v, 2) for k, v in t.items()}}))
    elif args.action == "down":
        lab.down()
        print(json.dumps({"lab": "down"}))
    elif args.action == "status":
        st = lab.status()
        print(json.dumps(st, indent=2))
        return Exit.OK if st["running"] else Exit.INPUT
    elif args.action == "record":
        from agent.lab.record import record_all

        await record_all([args.scenario] if args.scenario else None, dialplan=args.dialplan)
    elif args.action == "call":
        from agent.lab import sipp
        from agent.lab.record import STYLE_SCENARIOS, place

        lab.up(dialplan=args.dialplan)
        scenarios = STYLE_SCENARIOS.get(args.dialplan, [])
        chosen = [s for s in scenarios if args.scenario in (None, s.name)]
        if not chosen:
            raise LabError(f"unknown scenario {args.scenario!r}; one of "
                           + ", ".join(s.name for s in scenarios))
        with sipp.AgentPhones() as phones:
            phones.wait_ready()
            for sc in chosen:
                r = await place(sc)
                print(json.dumps({"scenario": sc.name, "did": sc.did, "sipp_rc": r.returncode}))
    return Exit.OK
