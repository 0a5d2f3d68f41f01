"""Record the raw AMI stream of each lab scenario into tests/fixtures/ami/ (replayed by tests),
and append the CDR rows Asterisk wrote for those calls to tests/fixtures/cdr/Master.csv (so the
CDR parser is tested against the same calls, by Linkedid)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from agent.lab import sipp
from agent.lab.lab import Lab

FIXTURES = Path(__file__).resolve().parents[2] / "tests/fixtures/ami"


@dataclass(frozen=True)
class Scenario:
    name: str
    caller_scenario: str
    did: str
    duration_ms: int = 2000
    anonymous: bool = False
    caller: str = "+919876543210"


SCENARIOS = [
    Scenario("answered_caller_hangup", sipp.TALK, sipp.DID_DIRECT, 2000),
    Scenario("answered_agent_hangup", sipp.WAIT_FOR_BYE, sipp.DID_AGENT_HANGS_UP),
    Scenario("no_answer", sipp.REFUSED, sipp.DID_NO_ANSWER),
    Scenario("caller_gives_up", sipp.GIVE_UP, sipp.DID_NO_ANSWER, 1500),
    Scenario("busy", sipp.REFUSED, sipp.DID_BUSY),
    Scenario("queue_answered", sipp.TALK, sipp.DID_SUPPORT, 3000, caller="9876543211"),
    Scenario("queue_sales", sipp.TALK, sipp.DID_SALES, 1000, caller="+14155550123"),
    Scenario("queue_abandoned", sipp.TALK, sipp.DID_BILLING, 2000),
    Scenario("anonymous", sipp.TALK, sipp.DID_SALES, 1000, anonymous=True),
    Scenario("appointment", sipp.TALK, sipp.DID_APPOINTMENT, 1500),
]


class RawAmi:
    """A bare AMI connection that keeps every byte Asterisk sends after login."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.last_rx = time.monotonic()

    async def connect(self, secret: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", 5038)
        await self.reader.readline()  # banner
        self.writer.write(
            f"Action: Login\r\nActionID: rec-login\r\nUsername: aftercall\r\nSecret: {secret}\r\n\r\n".encode()
        )
        resp = await self.reader.readuntil(b"\r\n\r\n")
        if b"Success" not in resp:
            raise RuntimeError("AMI login refused")

    async def pump(self) -> None:
        while data := await self.reader.read(65536):
            self.buf += data
            self.last_rx = time.monotonic()

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


async def record_all(names: list[str] | None = None, out: Path = FIXTURES, log=print) -> None:
    lab = Lab()
    lab.up(log=log)
    out.mkdir(parents=True, exist_ok=True)
    ami = RawAmi()
    await ami.connect(lab.secret())
    pump = asyncio.create_task(ami.pump())
    cdr_from = lab.cdr_csv.stat().st_size if lab.cdr_csv.exists() else 0
    with sipp.AgentPhones(agent_hangup_ms=2000):
        for sc in SCENARIOS:
            if names and sc.name not in names:
                continue
            ami.take()
            res = await sipp.place_call(sc.caller_scenario, sc.did, duration_ms=sc.duration_ms,
                                        anonymous=sc.anonymous, caller=sc.caller)
            # Cdr events follow the last Hangup; a quiet second means the call is fully logged.
            while time.monotonic() - ami.last_rx < 1.0:
                await asyncio.sleep(0.1)
            data = ami.take()
            (out / f"{sc.name}.txt").write_bytes(data)
            log(f"recorded {sc.name}: sipp rc={res.returncode}, {data.count(b'Event: ')} events")
    pump.cancel()
    ami.writer.close()
    if lab.cdr_csv.exists():
        with lab.cdr_csv.open("rb") as fh:
            fh.seek(cdr_from)
            rows = fh.read()
        cdr_fixture = out.parent / "cdr" / "Master.csv"
        cdr_fixture.parent.mkdir(parents=True, exist_ok=True)
        with cdr_fixture.open("ab") as fh:
            fh.write(rows)
        log(f"appended {len(rows.splitlines())} CDR rows to {cdr_fixture}")
