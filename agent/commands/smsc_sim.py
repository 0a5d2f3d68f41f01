"""`aftercall smsc-sim`: the SMS gateway simulator (SMPP + HTTP) with fault injection, and its
handset inbox (what the handsets received; a reply sent as a handset)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agent.commands.exits import Exit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "smsc-sim", help="run the SMS gateway simulator (SMPP + HTTP) with fault injection")
    configure_parser(p)
    p.set_defaults(run=run)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("serve", "inbox", "reply"), default="serve",
                   help="serve (default); inbox: print what the handsets received; reply: send "
                        "a reply as a handset (both talk to a running simulator's --url)")
    p.add_argument("words", nargs="*", metavar="TEXT", help="with reply: the reply text")
    p.add_argument("--url", default="http://127.0.0.1:13013",
                   help="with inbox/reply: the simulator's HTTP (control) address")
    p.add_argument("--from", dest="sender", help="with reply: the handset's number")
    p.add_argument("--to", default=None, help="with reply: the sender id replied to "
                   "(default: whoever last texted the handset)")
    p.add_argument("--number", default=None, help="with inbox: one handset only")
    p.add_argument("--smpp-host", default="127.0.0.1")
    p.add_argument("--smpp-port", type=int, default=2775)
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=13013, help="-1 to disable the HTTP face")
    p.add_argument("--control-port", type=int, default=None)
    p.add_argument("--system-id", default=os.environ.get("AFTERCALL_SIM_SYSTEM_ID", "aftercall"))
    p.add_argument("--password-env", default="AFTERCALL_SIM_PASSWORD",
                   help="environment variable holding the SMPP password (default: 'secret')")
    p.add_argument("--record", dest="record_path", default=None,
                   help="append messages as JSON lines")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--refuse-bind", action="store_true")
    p.add_argument("--throttle-tps", type=float, default=None)
    p.add_argument("--error-for", type=_error_for, action="append", default=[],
                   metavar="REGEX=STATUS", help="refuse destinations matching REGEX with STATUS")
    p.add_argument("--never-respond", action="store_true")
    p.add_argument("--drop-after", type=int, default=None)
    p.add_argument("--receipt-delay", type=float, default=0.05)
    p.add_argument("--outcome-mix", type=_outcome, default={"DELIVRD": 1.0},
                   metavar="STAT=W,...", help="e.g. DELIVRD=0.9,UNDELIV=0.1")
    p.add_argument("--duplicate-receipts", action="store_true")
    p.add_argument("--out-of-order-receipts", action="store_true")


async def run(args: argparse.Namespace) -> int:
    from agent.sim.core import FaultConfig
    from agent.sim.inbox import inbox_cli, reply_cli
    from agent.sim.main import run_sim

    if args.action == "inbox":
        return inbox_cli(args.url, args.number)
    if args.action == "reply":
        if not args.sender or not args.words:
            sys.stderr.write("smsc-sim: usage: smsc-sim reply TEXT --from NUMBER [--url URL]\n")
            return Exit.USAGE
        return reply_cli(args.url, args.sender, " ".join(args.words), args.to)
    try:
        faults = FaultConfig(
            refuse_bind=args.refuse_bind, throttle_tps=args.throttle_tps,
            error_for=list(args.error_for), never_respond=args.never_respond,
            drop_after=args.drop_after, receipt_delay=args.receipt_delay,
            outcome_mix=dict(args.outcome_mix), duplicate_receipts=args.duplicate_receipts,
            out_of_order_receipts=args.out_of_order_receipts,
        )
    except ValueError as exc:
        print(f"smsc-sim: {exc}", file=sys.stderr)
        return Exit.USAGE
    password = os.environ.get(args.password_env, "secret")
    try:
        await run_sim(
            smpp_host=args.smpp_host, smpp_port=args.smpp_port, http_host=args.http_host,
            http_port=None if args.http_port < 0 else args.http_port, system_id=args.system_id,
            password=password, faults=faults, record_path=args.record_path,
            control_port=args.control_port, seed=args.seed,
        )
    except OSError as exc:
        print(f"smsc-sim: cannot listen: {exc}", file=sys.stderr)
        return Exit.INPUT
    return Exit.OK


def _pair(value: str, sep: str, kind: str) -> tuple[str, str]:
    key, found, rest = value.rpartition(sep)
    if not found or not key:
        raise argparse.ArgumentTypeError(f"{kind}: expected KEY{sep}VALUE, got {value!r}")
    return key, rest


def _error_for(value: str) -> tuple[str, int]:
    pattern, status = _pair(value, "=", "--error-for")
    try:
        return pattern, int(status, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--error-for: status {status!r} is not a number") from None


def _outcome(value: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for item in value.split(","):
        stat, weight = _pair(item, "=", "--outcome-mix")
        try:
            mix[stat.strip().upper()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--outcome-mix: weight {weight!r} is not a number") from None
    return mix
