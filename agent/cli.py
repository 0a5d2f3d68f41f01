"""Command line: argv -> settings -> logging -> the command; exit codes.

Exit codes: 0 ok, 1 the input is wrong (rules, call record, arguments), 2 usage,
3 cannot connect/authenticate (AMI, gateway, store), 4 lab failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.errors import AftercallError, AmiError, ConfigError, LabError, StoreError

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_CONNECT, EXIT_LAB, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aftercall",
        description="After-call SMS for Asterisk: AMI events in, rule-driven SMS out.",
    )
    p.add_argument("--version", action="version", version=f"aftercall {__version__}")
    p.add_argument("--log-level", default=None, help="debug, info, warning (env AFTERCALL_LOG_LEVEL)")
    p.add_argument("--log-json", action="store_true", default=None,
                   help="JSON log lines even on a terminal")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    from agent.settings import add_common_args

    run = sub.add_parser("run", help="run the agent (AMI, rules, dispatcher, HTTP server)")
    add_common_args(run)
    run.add_argument("--dry-run", action="store_true", help="decide and log everything, send nothing")

    chk = sub.add_parser("check", help="validate rules.yaml and report per template")
    chk.add_argument("rules", nargs="?", default="rules.yaml")

    exp = sub.add_parser("explain", help="why each rule did or did not fire for a call record")
    exp.add_argument("call", help="a call record as JSON (a file, or a line printed by `calls` or "
                                  "`replay`), or the id of a call in the store (--db)")
    exp.add_argument("--rules", default="rules.yaml")
    exp.add_argument("--db", default=None,
                     help="store to look a call id up in (AFTERCALL_DB, default ./aftercall.db)")

    rep = sub.add_parser("replay", help="feed a recorded AMI transcript through the call tracker")
    rep.add_argument("file")
    rep.add_argument("--rules", default=None, help="rules.yaml for region and agent directory")

    calls = sub.add_parser("calls", help="connect to AMI and print call records as JSON lines")
    add_common_args(calls)
    calls.add_argument("--follow", action="store_true", help="keep printing as calls finish")

    doc = sub.add_parser("doctor", help="what aftercall will see and do on this PBX, and what "
                                         "to fix (exit 0: nothing blocks, 1: fixes listed)")
    add_common_args(doc)
    doc.add_argument("--asterisk-etc", default="/etc/asterisk",
                     help="Asterisk's configuration directory, read when readable")
    doc.add_argument("--last", type=int, default=10, help="how many recent CDR calls to show")
    doc.add_argument("--listen", type=float, default=3.0,
                     help="seconds to listen to live events when manager.conf is not readable")

    lab = sub.add_parser("lab", help="the local Asterisk lab (Debian sid root under chroot)")
    lab.add_argument("action", choices=["up", "down", "status", "record", "call"])
    lab.add_argument("--scenario", default=None, help="with record/call: one scenario name")
    lab.add_argument("--dialplan", default="ours",
                     help="with up/record/call: the dialplan style (ours, freepbx, vanilla); "
                          "switching a running lab is a reload")

    from agent.sim.main import add_cli as add_sim_cli

    add_sim_cli(sub)
    from agent import reports_cli

    reports_cli.add_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from agent.logs import setup_logging
    from agent.settings import env

    setup_logging(args.log_level or env("LOG_LEVEL", "info"), json=args.log_json)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConfigError as e:
        print(f"aftercall: {e}", file=sys.stderr)
        return EXIT_INPUT
    except (AmiError, StoreError) as e:
        print(f"aftercall: {e}", file=sys.stderr)
        return EXIT_CONNECT
    except LabError as e:
        print(f"aftercall lab: {e}", file=sys.stderr)
        return EXIT_LAB
    except AftercallError as e:
        print(f"aftercall: {e}", file=sys.stderr)
        return EXIT_INPUT


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "lab":
        return _lab(args)
    if cmd == "check":
        from agent.rules.commands import check

        text, code = check(args.rules)
        print(text)
        return code
    if cmd == "explain":
        from agent.rules.commands import explain

        if not args.call.strip().startswith("{") and not Path(args.call).is_file():
            from agent.reports_cli import stored_call

            found = stored_call(args.db or os.environ.get("AFTERCALL_DB", "./aftercall.db"),
                                args.call)
            if isinstance(found, int):
                return found
            record, stored = found
            text, code = explain(args.rules, args.call, record=record, stored=stored)
        else:
            text, code = explain(args.rules, args.call)
        print(text)
        return code
    if cmd == "replay":
        from agent.calls.replay import replay_cli

        return replay_cli(args.file, rules_path=args.rules)
    if cmd == "calls":
        from agent.ami.follow import follow
        from agent.settings import Settings

        return asyncio.run(follow(Settings.from_args(args), keep_going=args.follow))
    if cmd == "doctor":
        from agent.doctor import doctor_cli
        from agent.settings import Settings

        return doctor_cli(Settings.from_args(args), etc=args.asterisk_etc, last=args.last,
                          listen=args.listen)
    if cmd == "run":
        from agent.app import run_agent
        from agent.settings import Settings

        return asyncio.run(run_agent(Settings.from_args(args), dry_run=args.dry_run))
    if cmd == "smsc-sim":
        from agent.sim.main import main_from_args

        return main_from_args(args) or 0
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args) or 0)
    raise AftercallError(f"unknown command {cmd}")


def _lab(args: argparse.Namespace) -> int:
    from agent.lab.lab import Lab

    lab = Lab()
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
        return 0 if st["running"] else 1
    elif args.action == "record":
        from agent.lab.record import record_all

        asyncio.run(record_all([args.scenario] if args.scenario else None,
                               dialplan=args.dialplan))
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
                r = asyncio.run(place(sc))
                print(json.dumps({"scenario": sc.name, "did": sc.did, "sipp_rc": r.returncode}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
