"""`aftercall run`: the agent itself (AMI, rules, dispatcher, HTTP server) until stopped;
SIGINT/SIGTERM stop it (draining), SIGHUP reloads rules.yaml."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any


def register(subparsers: Any) -> None:
    from agent.settings import add_common_args

    p = subparsers.add_parser("run", help="run the agent (AMI, rules, dispatcher, HTTP server)")
    add_common_args(p)
    p.add_argument("--dry-run", action="store_true", help="decide and log everything, send nothing")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.app import AfterCallAgent
    from agent.errors import AftercallError
    from agent.settings import Settings

    agent = AfterCallAgent(Settings.from_args(args), dry_run=args.dry_run)
    try:
        await agent.run(_signals(agent.reload_rules))
    except* AftercallError as eg:
        raise eg.exceptions[0] from None
    return 0


def _signals(reload: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    """The agent's shutdown trigger: returns at SIGINT or SIGTERM; SIGHUP reloads."""

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        await stop.wait()

    return wait
