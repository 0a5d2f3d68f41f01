"""End to end, scheduled sends: a real agent (SQLite, the simulator over SMPP, a fake Asterisk)
schedules a text 30 minutes after a missed call, stops, and the agent started after the time
has come sends it, once; a newer answered call from the same number cancels another."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.app import AfterCallAgent
from devkit.harness import rules_with, until
from agent.models import CallRecord, Direction, Disposition, MessageState
from agent.settings import Settings
from agent.sim.main import start_sim
from fake_ami import FakeAmi

LATER = ("  - name: later\n    match: {disposition: [missed]}\n"
         "    send: {to: caller, template: sorry_we_missed_you, delay: 30m}\n"
         "    unless: {called_again: true}\n")


async def test_a_scheduled_text_survives_a_restart_and_a_newer_call_cancels_one(
    tmp_path: Path,
) -> None:
    rules = rules_with(tmp_path, first_rule=LATER)
    start = datetime.now(UTC)
    shift = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + shift

    def settings(**kw: object) -> Settings:
        kw.setdefault("ami_secret", "x")
        return Settings(rules=rules, db=tmp_path / "a.db", **kw)  # type: ignore[arg-type]

    def call(n: int, caller: str, disposition: Disposition) -> CallRecord:
        return CallRecord(call_id=f"{n}", caller=caller, queue="Support",
                          direction=Direction.INBOUND, disposition=disposition,
                          agent="2001" if disposition is Disposition.ANSWERED else None,
                          talk_seconds=5, ended_at=start)

    kept, cancelled = "+919800000201", "+919800000202"
    first = AfterCallAgent(settings(), clock=clock)
    await first.open_store()
    try:
        await first.pipeline.apply(call(1, kept, Disposition.MISSED))
        await first.pipeline.apply(call(2, cancelled, Disposition.MISSED))
        await first.pipeline.apply(call(3, cancelled, Disposition.ANSWERED))
        rows = {r.call_id: r for r in await first.store.list_messages()}
        assert (rows["1"].state, rows["1"].reason) == (MessageState.DEFERRED,
                                                        "scheduled_unless_called_again")
        assert rows["1"].next_attempt_at == start + timedelta(minutes=30)
        assert (rows["2"].state, rows["2"].reason) == (MessageState.SUPPRESSED, "called_again")
    finally:
        await first.dispatcher.stop(timeout=1.0)
        await first.store.close()

    # The agent is down when the text falls due; the next one starts 31 minutes on.
    shift = timedelta(minutes=31)
    sim = await start_sim(smpp_port=0, http_port=0)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    fake = FakeAmi()
    await fake.start()
    second = AfterCallAgent(settings(ami_secret=fake.secret, ami_port=fake.port, http_port=0,
                                     agi_port=0), clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop.wait))
    try:
        handsets = lambda: ["+" + m.dest.lstrip("+") for m in sim.core.messages]  # noqa: E731
        await until(lambda: kept in handsets(), 30, show=handsets)
        assert handsets() == [kept]  # the cancelled one never left
        # The handset has it once the simulator took the submit_sm; the row says so once the
        # agent has the submit_sm_resp and has committed it.
        async def states() -> list[MessageState]:
            return [r.state for r in await second.store.list_messages() if r.call_id == "1"]

        async def submitted() -> bool:
            return (await states())[0] in (MessageState.SUBMITTED, MessageState.DELIVERED)
        await until(submitted, 30)
        assert len(await states()) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake.stop()
        await sim.stop()
