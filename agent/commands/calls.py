"""`aftercall calls [--follow]`: live call records from AMI as JSON lines (for engineers)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from typing import Any

from agent.ami.client import AmiClient
from agent.ami.config import config_from_settings
from agent.ami.inventory import EndpointWatch
from agent.calls.pbx import PbxProfile, receive_clock
from agent.calls.tracker import CallTracker
from agent.errors import outcome
from agent.rules.loader import load_rules
from agent.rules.tracking import agents_directory, pbx_profile
from agent.settings import Settings, add_common_args


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("calls", help="connect to AMI and print call records as JSON lines")
    add_common_args(p)
    p.add_argument("--follow", action="store_true", help="keep printing as calls finish")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    return await follow(Settings.from_args(args), keep_going=args.follow)


def _tracker(settings: Settings) -> CallTracker:
    """With a rules.yaml at hand, its region and agent directory, as the agent would use."""
    if not settings.rules.exists():
        return CallTracker(clock=receive_clock(), pbx=PbxProfile(name=settings.pbx))
    rules = load_rules(settings.rules)
    return CallTracker(agents=agents_directory(rules), region=rules.defaults.region,
                       pbx=pbx_profile(rules, settings.pbx), clock=receive_clock())


async def follow(settings: Settings, *, keep_going: bool) -> int:
    """Print every call record (connected and completed) as one JSON line. Without
    ``--follow``, stop after the first completed call."""
    tracker = _tracker(settings)
    done = asyncio.Event()
    # Trunks and phones as the PBX's PJSIP configuration says, as the agent reads them.
    endpoints = EndpointWatch(lambda inv: setattr(
        tracker, "pbx", replace(tracker.pbx, detected=inv.endpoints)), pbx=settings.pbx)

    async def on_login(client: AmiClient) -> None:
        await endpoints.at_login(client)
        tracker.resync(await client.core_show_channels())

    client = AmiClient(config_from_settings(settings), on_login=on_login)

    def handle(event: object) -> None:
        for record in tracker.feed(event):  # type: ignore[arg-type]
            print(json.dumps(record.to_dict()), flush=True)
            if record.trigger.value == "call_completed" and not keep_going:
                done.set()

    async with asyncio.TaskGroup() as tg:
        # A refused login comes back as a value: raised here it would leave the group as an
        # ExceptionGroup (a traceback) instead of the CLI's one line and exit 3.
        runner = tg.create_task(outcome(client.run()))
        consumer = tg.create_task(client.consume(handle))
        waiter = tg.create_task(done.wait())
        wait_for = {runner} if keep_going else {runner, waiter}
        finished, _ = await asyncio.wait(wait_for, return_when=asyncio.FIRST_COMPLETED)
        failure = runner.result() if runner in finished else None
        await client.close()
        for t in (runner, consumer, waiter):
            t.cancel()
    sys.stdout.flush()
    if failure is not None:
        raise failure
    return 0
