"""A per-number limit holds when one number's records are stored concurrently: the pipeline
applies them in order (each reads the store's count for the number, which the record before
wrote), as it does for cooldowns."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.models import CallRecord, Direction, Disposition, MessageState


async def test_one_numbers_records_in_flight_together_send_at_most_its_limit(
    tmp_path: Path,
) -> None:
    from agent.app import AfterCallAgent
    from agent.settings import Settings

    rules = tmp_path / "rules.yaml"
    shutil.copy(Path(__file__).parents[2] / "rules.yaml", rules)
    text = rules.read_text()
    # the missed-call rule without its cooldown: only the per-number limit (3/1h) holds
    assert "    cooldown: 4h\n    max_age: 10m\n" in text
    assert "    per_number: 3/1h " in text
    rules.write_text(text.replace("    cooldown: 4h\n    max_age: 10m\n", "    max_age: 10m\n"))
    now = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 11:30 in Kolkata: outside quiet hours

    def missed(i: int) -> CallRecord:
        return CallRecord(call_id=f"1714543200.{i}", caller="+919811000100", queue="Billing",
                          direction=Direction.INBOUND, disposition=Disposition.MISSED,
                          ended_at=now - timedelta(seconds=1))

    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db"),
                           clock=lambda: now)
    await agent.open_store()
    read = agent.store.policy_facts
    reads = 0

    async def slow_to_resume(*args: Any, **kw: Any) -> Any:
        """The store's answer, taken in at a later and later moment: a record that read
        before the one ahead of it committed must not judge after that one's count left
        memory."""
        nonlocal reads
        facts = await read(*args, **kw)
        reads += 1
        await asyncio.sleep(0.02 * reads)
        return facts

    agent.store.policy_facts = slow_to_resume  # type: ignore[method-assign]
    runner = asyncio.create_task(agent.pipeline.run())
    try:
        seqs = [await agent.pipeline.put(missed(i)) for i in range(8)]
        await asyncio.wait_for(agent.pipeline.stored(seqs), 30)
        rows = await agent.store.list_messages()
        states = [(r.state, r.reason) for r in rows if r.rule == "missed-call-sorry"]
        assert len(states) == 8
        assert states.count((MessageState.QUEUED, None)) == 3, states
        assert states.count((MessageState.SUPPRESSED, "rate_limited")) == 5
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await agent.dispatcher.stop(timeout=1.0)
        await agent.store.close()
