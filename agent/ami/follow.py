"""`aftercall calls --follow`: call records as JSON lines, straight from AMI (for engineers)."""

from __future__ import annotations

import asyncio
import json
import sys

from agent.ami.client import AmiClient, config_from_settings
from agent.calls.replay import directory_from_rules
from agent.calls.tracker import CallTracker
from agent.settings import Settings


def _tracker(settings: Settings) -> CallTracker:
    """With a rules.yaml at hand, its region and agent directory, as the agent would use."""
    if not settings.rules.exists():
        return CallTracker()
    region, agents = directory_from_rules(settings.rules)
    return CallTracker(agents=agents, region=region)


async def follow(settings: Settings, *, keep_going: bool) -> int:
    """Print every call record (connected and completed) as one JSON line. Without
    ``--follow``, stop after the first completed call."""
    tracker = _tracker(settings)
    done = asyncio.Event()

    async def on_login(client: AmiClient) -> None:
        tracker.resync(await client.core_show_channels())

    client = AmiClient(config_from_settings(settings), on_login=on_login)

    def handle(event: object) -> None:
        for record in tracker.feed(event):  # type: ignore[arg-type]
            print(json.dumps(record.to_dict()), flush=True)
            if record.trigger.value == "call_completed" and not keep_going:
                done.set()

    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(client.run())
        consumer = tg.create_task(client.consume(handle))
        await done.wait() if not keep_going else await runner
        await client.close()
        runner.cancel()
        consumer.cancel()
    sys.stdout.flush()
    return 0
