"""`aftercall calls [--follow]`: live call records from AMI as JSON lines (for engineers)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from agent.settings import add_common_args

    p = subparsers.add_parser("calls", help="connect to AMI and print call records as JSON lines")
    add_common_args(p)
    p.add_argument("--follow", action="store_true", help="keep printing as calls finish")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.ami.follow import follow
    from agent.settings import Settings

    return await follow(Settings.from_args(args), keep_going=args.follow)
