"""The whole loop on this machine: lab Asterisk + SIPp + the simulator + the agent, in one
process (the agent and simulator share the test's event loop). Used by `make demo`, the
end-to-end tests and bench/latency.py."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.app import AfterCallAgent
from agent.lab.lab import Lab
from agent.lab.sipp import AgentPhones
from agent.settings import Settings
from agent.sim.core import FaultConfig, SimMessage
from agent.sim.main import RunningSim, start_sim
from agent.store.base import MessageFilter, MessageRow

REPO = Path(__file__).resolve().parents[2]


def rules_with_quiet_hours(src: Path, dst: Path, *, night_now: bool, tz: str = "Asia/Kolkata") -> Path:
    """A copy of ``src`` whose default quiet hours either cover this moment (``night_now``) or
    lie hours away, so tests do not depend on the time of day they run at."""
    local = datetime.now(ZoneInfo(tz))
    if night_now:
        start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    else:
        start, end = local + timedelta(hours=3), local + timedelta(hours=4)
    text = re.sub(
        r"quiet_hours: \{from: \"\d\d:\d\d\", to: \"\d\d:\d\d\", action: defer\}",
        f'quiet_hours: {{from: "{start:%H:%M}", to: "{end:%H:%M}", action: defer}}',
        src.read_text(),
        count=1,
    )
    dst.write_text(text)
    return dst


@dataclass
class Loop:
    lab: Lab
    sim: RunningSim
    agent: AfterCallAgent
    settings: Settings
    _stop: asyncio.Event
    _task: asyncio.Task[None]

    async def messages(self, **filters: object) -> list[MessageRow]:
        return await self.agent.store.list_messages(MessageFilter(**filters))  # type: ignore[arg-type]

    async def wait_rows(self, predicate, timeout: float = 20.0) -> list[MessageRow]:  # type: ignore[no-untyped-def]
        """Wait until the store's rows satisfy ``predicate`` (rows -> bool); returns them."""
        async def poll() -> list[MessageRow]:
            while True:
                rows = await self.messages(newest_first=False)
                if predicate(rows):
                    return rows
                await asyncio.sleep(0.05)

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            rows = await self.messages(newest_first=False)
            summary = "\n".join(f"  {r.rule} {r.recipient_kind} {r.number} {r.state} {r.reason}"
                                for r in rows)
            raise TimeoutError(f"rows did not settle within {timeout}s:\n{summary}") from None

    def handset(self, number: str) -> list[SimMessage]:
        """What the simulator delivered to one handset (reassembled)."""
        digits = number.lstrip("+")
        return [m for m in self.sim.core.messages if m.dest.lstrip("+") == digits]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 15)
        await self.sim.stop()


@asynccontextmanager
async def running_loop(
    workdir: Path,
    *,
    rules: Path | None = None,
    night: bool = False,
    db: Path | None = None,
    faults: FaultConfig | None = None,
    dry_run: bool = False,
    phones: bool = True,
    ami_port: int = 5038,
    cdr: bool = False,
) -> AsyncIterator[Loop]:
    lab = Lab()
    await asyncio.to_thread(lab.up)
    workdir.mkdir(parents=True, exist_ok=True)
    sim = await start_sim(smpp_port=0, http_port=0, faults=faults)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    os.environ["SIM_HTTP_PORT"] = str(sim.http_port)
    rules_path = rules or rules_with_quiet_hours(REPO / "rules.yaml", workdir / "rules.yaml",
                                                 night_now=night)
    settings = Settings(ami_secret=lab.secret(), rules=rules_path, ami_port=ami_port,
                        db=db or workdir / "aftercall.db", http_port=0,
                        cdr_csv=lab.cdr_csv if cdr else None)
    agent = AfterCallAgent(settings, dry_run=dry_run)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    ph = AgentPhones(agent_hangup_ms=2000) if phones else None
    try:
        if ph is not None:
            await asyncio.to_thread(ph.__enter__)
        await asyncio.wait_for(agent.ready.wait(), 15)
        loop = Loop(lab, sim, agent, settings, stop, task)
        yield loop
    finally:
        if ph is not None:
            ph.stop()
        if not task.done():
            stop.set()
            await asyncio.wait_for(task, 15)
        await sim.stop()
