"""The whole loop on this machine: lab Asterisk + SIPp + the simulator + the agent, in one
process (the agent and simulator share the test's event loop). Used by `make demo`, the
end-to-end tests and bench/latency.py."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.app import AfterCallAgent
from agent.lab.lab import DEFAULT_DIALPLAN, Lab
from agent.lab.sipp import DID_BUSY, AgentPhones
from agent.models import CallRecord
from agent.settings import Settings
from agent.sim.core import FaultConfig, SimMessage
from agent.sim.main import RunningSim, start_sim
from agent.store.base import MessageFilter, MessageRow

REPO = Path(__file__).resolve().parents[1]


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


def rules_with(workdir: Path, *edits: tuple[str, str], first_rule: str | None = None,
               night: bool = False) -> Path:
    """A test's rules.yaml: this repository's, quiet hours as ``night`` asks, each ``(old, new)``
    replaced once (an ``old`` that is not there fails loudly: rules.yaml changed under the
    test), and ``first_rule`` (YAML of one list item) put before every other rule."""
    path = rules_with_quiet_hours(REPO / "rules.yaml", workdir / "rules.yaml", night_now=night)
    text = path.read_text()
    for old, new in edits:
        if old not in text:
            raise AssertionError(f"rules.yaml no longer contains {old!r}")
        text = text.replace(old, new, 1)
    if first_rule is not None:
        text = re.sub(r"^rules:.*$", lambda m: m.group(0) + "\n" + first_rule.rstrip("\n"),
                      text, count=1, flags=re.MULTILINE)
    path.write_text(text)
    return path


def secret_file(path: Path, secret: str, *, mode: int = 0o600) -> Path:
    """A secret file as ``pbxes[].secret_file`` and ``--ami-secret-file`` read it: the secret
    on one line, owner-only unless ``mode`` says otherwise."""
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


def pbxes_section(workdir: Path, pbxes: Mapping[str, Mapping[str, object]]) -> str:
    """rules.yaml's ``pbxes:`` section, one entry per name in order: each entry's keys as given
    (port, host, tls, cdr_csv ...), its ``secret`` written to ``workdir/NAME.secret`` and named
    as the entry's ``secret_file``."""
    lines = ["pbxes:"]
    for name, keys in pbxes.items():
        lines.append(f"  - name: {name}")
        for key, value in keys.items():
            if key == "secret":
                key, value = "secret_file", secret_file(workdir / f"{name}.secret", str(value))
            elif isinstance(value, bool):
                value = str(value).lower()
            lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n"


def busy_line_rule(max_age_s: float) -> str:
    """A rule (YAML) for the lab's busy DID with a short max_age: "older than max_age" within
    a test's few seconds."""
    return (f"  - name: busy-sorry\n    match: {{did: [\"{DID_BUSY}\"]}}\n"
            "    send: {to: caller, template: sorry_we_missed_you}\n"
            f"    max_age: {max_age_s:g}s\n")


async def until(predicate: Callable[[], object], timeout: float = 20.0,
                show: Callable[[], object] | None = None) -> None:
    """Poll ``predicate`` every 50 ms until it is true (an async predicate is awaited); after
    ``timeout`` fail, with ``show()`` (what the test was waiting on) in the message."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                got = predicate()
                if inspect.isawaitable(got):
                    got = await got
                if got:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not reached within {timeout}s: {show() if show else ''}") from None


def handset(sim: RunningSim, number: str) -> list[SimMessage]:
    """What the simulator delivered to one handset (reassembled)."""
    digits = number.lstrip("+")
    return [m for m in sim.core.messages if m.dest.lstrip("+") == digits]


def handsets(sim: RunningSim) -> Counter[str]:
    """How many texts the simulator delivered to each handset (E.164), reassembled."""
    return Counter("+" + m.dest.lstrip("+") for m in sim.core.messages)


@asynccontextmanager
async def agent_running(agent: AfterCallAgent, timeout: float = 30.0,
                        ) -> AsyncIterator[AfterCallAgent]:
    """``agent`` run as ``aftercall run`` does, ready (every link logged in) within ``timeout``
    seconds, and stopped in order (within ``timeout``) when the body is done."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    try:
        await asyncio.wait_for(agent.ready.wait(), timeout)
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout)


@dataclass
class Loop:
    lab: Lab
    sim: RunningSim
    agent: AfterCallAgent
    settings: Settings
    _stop: asyncio.Event
    _task: asyncio.Task[None]
    records: list[CallRecord] = field(default_factory=list)  # every record the agent took

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
        return handset(self.sim, number)


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
    dialplan: str = DEFAULT_DIALPLAN,
    dashboard_token: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Loop]:
    """``clock``: the agent's idea of now (a test shifts it to be after a scheduled time)."""
    lab = Lab()
    await asyncio.to_thread(lambda: lab.up(dialplan=dialplan))
    workdir.mkdir(parents=True, exist_ok=True)
    sim = await start_sim(smpp_port=0, http_port=0, faults=faults)
    os.environ["SMPP_PORT"] = str(sim.smpp_port)
    os.environ["SIM_HTTP_PORT"] = str(sim.http_port)
    rules_path = rules or rules_with_quiet_hours(REPO / "rules.yaml", workdir / "rules.yaml",
                                                 night_now=night)
    settings = Settings(ami_secret=lab.secret(), rules=rules_path, ami_port=ami_port,
                        db=db or workdir / "aftercall.db", http_port=0,
                        cdr_csv=lab.cdr_csv if cdr else None, dashboard_token=dashboard_token)
    agent = (AfterCallAgent(settings, dry_run=dry_run) if clock is None
             else AfterCallAgent(settings, dry_run=dry_run, clock=clock))
    seen: list[CallRecord] = []
    put = agent.pipeline.put

    async def recorded(record: CallRecord) -> None:  # what the tracker and the CDR handed over
        seen.append(record)
        await put(record)

    agent.pipeline.put = recorded  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop.wait))
    ph = AgentPhones(agent_hangup_ms=2000) if phones else None
    try:
        if ph is not None:
            await asyncio.to_thread(ph.__enter__)
        await asyncio.wait_for(agent.ready.wait(), 15)
        loop = Loop(lab, sim, agent, settings, stop, task, seen)
        yield loop
    finally:
        if ph is not None:
            ph.stop()
        if not task.done():
            stop.set()
            await asyncio.wait_for(task, 15)
        await sim.stop()
