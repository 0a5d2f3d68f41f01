"""`aftercall run`: the agent itself (AMI, rules, dispatcher, HTTP server) until stopped."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from agent.settings import add_common_args

    p = subparsers.add_parser("run", help="run the agent (AMI, rules, dispatcher, HTTP server)")
    add_common_args(p)
    p.add_argument("--dry-run", action="store_true", help="decide and log everything, send nothing")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.app import run_agent
    from agent.settings import Settings

    return await run_agent(Settings.from_args(args), dry_run=args.dry_run)
