"""Command line: argv -> the command's parser -> logging -> the command, in one event loop.

The commands are ``agent.commands``, one module each; their exit codes are the one table in
``agent.commands.exits``: 0 ok, 1 the input is wrong (rules, call record, arguments) or there
is something to fix, 2 usage, 3 cannot connect/authenticate (AMI, gateway, store), 4 lab
failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from agent import __version__
from agent.commands import COMMANDS, module
from agent.commands.exits import Exit, exit_for
from agent.errors import AftercallError, LabError


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: only its command's when it names one (the others' modules stay
    unimported), every command's otherwise (help, a mistyped command)."""
    named = next((a for a in argv or () if a in COMMANDS), None)
    p = argparse.ArgumentParser(
        prog="aftercall",
        description="After-call SMS for Asterisk: AMI events in, rule-driven SMS out.",
    )
    p.add_argument("--version", action="version", version=f"aftercall {__version__}")
    p.add_argument("--log-level", default=None, help="debug, info, warning (env AFTERCALL_LOG_LEVEL)")
    p.add_argument("--log-json", action="store_true", default=None,
                   help="JSON log lines even on a terminal")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in (named,) if named else COMMANDS:
        module(name).register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return Exit.USAGE
    from agent.logs import setup_logging
    from agent.settings import env

    setup_logging(args.log_level or env("LOG_LEVEL", "info"), json=args.log_json)
    return execute(args)


def execute(args: argparse.Namespace) -> int:
    """Run a parsed command to its exit code: the one ``asyncio.run`` of aftercall."""
    try:
        return int(asyncio.run(args.run(args)))
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except AftercallError as e:
        who = "aftercall lab" if isinstance(e, LabError) else "aftercall"
        sys.stderr.write(f"{who}: {str(e).rstrip()}\n")
        sys.stderr.flush()
        return exit_for(e)


if __name__ == "__main__":
    sys.exit(main())
