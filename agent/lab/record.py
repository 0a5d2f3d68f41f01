"""Record the raw AMI stream of each lab scenario into tests/fixtures/ami/ (replayed by tests),
and append the CDR rows Asterisk wrote for those calls to tests/fixtures/cdr/Master.csv (so the
CDR parser is tested against the same calls, by Linkedid). Other dialplan styles record into
tests/fixtures/ami/STYLE/ and tests/fixtures/cdr/STYLE/Master.csv, with a receive-time file
(``NAME.times``: the agent's clock at each read) for styles whose events carry no Timestamp."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from agent.lab import sipp
from agent.lab.lab import DEFAULT_DIALPLAN, Lab

FIXTURES = Path(__file__).resolve().parents[2] / "tests/fixtures/ami"


@dataclass(frozen=True)
class Scenario:
    name: str
    caller_scenario: str
    did: str
    duration_ms: int = 2000
    anonymous: bool = False
    caller: str = "+919876543210"
    phone: bool = False  # placed by an agent phone (``caller`` is its endpoint), not the trunk


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

# Scenarios every other style has (same DIDs for the same story, see asterisk_conf/dialplans).
_COMMON = [
    Scenario("answered_caller_hangup", sipp.TALK, sipp.DID_DIRECT, 2000),
    Scenario("answered_agent_hangup", sipp.WAIT_FOR_BYE, sipp.DID_AGENT_HANGS_UP),
    Scenario("busy", sipp.REFUSED, sipp.DID_BUSY),
    Scenario("caller_gives_up", sipp.GIVE_UP, sipp.DID_NO_ANSWER, 1500),
    Scenario("ring_timeout", sipp.REFUSED, sipp.DID_RING_TIMEOUT),
    Scenario("anonymous", sipp.TALK, sipp.DID_DIRECT, 1000, anonymous=True),
    Scenario("blind_transfer", sipp.TALK, sipp.DID_TRANSFER, 6000),
    # The caller hangs up during the greeting Playback that follows Answer(): nobody rung.
    Scenario("greeting_hangup", sipp.TALK, sipp.DID_GREETING, 2000),
]
STYLE_SCENARIOS: dict[str, list[Scenario]] = {
    # SCENARIOS are also the compose demo's calls (docker/sipp/caller.sh); these are the lab's.
    DEFAULT_DIALPLAN: [
        *SCENARIOS,
        # The caller hangs up during the greeting after Answer(), and in a queue nobody rings.
        Scenario("greeting_hangup", sipp.TALK, sipp.DID_GREETING, 2000),
        Scenario("queue_wait_hangup", sipp.TALK, sipp.DID_QUEUE_WAIT, 2000),
    ],
    "freepbx": [
        *_COMMON,
        Scenario("queue_answered", sipp.TALK, sipp.DID_SUPPORT, 3000, caller="9876543211"),
        Scenario("queue_abandoned", sipp.TALK, sipp.DID_BILLING, 2000),
        Scenario("ring_group", sipp.TALK, sipp.DID_RING_GROUP, 2000),
        Scenario("queue_wait_hangup", sipp.TALK, sipp.DID_QUEUE_WAIT, 2000),
        Scenario("ring_group_gives_up", sipp.GIVE_UP, sipp.DID_RING_GROUP_BUSY, 1500),
        Scenario("voicemail", sipp.TALK, sipp.DID_NO_ANSWER, 3000),
        Scenario("outbound", sipp.TALK, sipp.PSTN_NUMBER, 2000, caller="2001", phone=True),
        Scenario("internal", sipp.TALK, "2002", 1500, caller="2001", phone=True),
    ],
    "vanilla": [
        *_COMMON,
        Scenario("no_answer", sipp.REFUSED, sipp.DID_NO_ANSWER),
        Scenario("outbound", sipp.TALK, sipp.PSTN_NUMBER, 2000, caller="alice", phone=True),
        Scenario("internal", sipp.TALK, "2002", 1500, caller="alice", phone=True),
    ],
    # Contexts no built-in name matches; the front desk's caller id is the company's number,
    # and a tie line from a branch office shows a short number through the carrier.
    "carrier": [
        *_COMMON,
        Scenario("no_answer", sipp.REFUSED, sipp.DID_NO_ANSWER),
        Scenario("outbound", sipp.TALK, sipp.PSTN_NUMBER, 2000, caller="frontdesk", phone=True),
        Scenario("internal", sipp.TALK, "2002", 1500, caller="ops1", phone=True),
        Scenario("short_caller_id", sipp.TALK, sipp.DID_DIRECT, 1500, caller="4711"),
    ],
}


def fixture_dir(style: str, base: Path = FIXTURES) -> Path:
    return base if style == DEFAULT_DIALPLAN else base / style


async def place(sc: Scenario) -> sipp.CallResult:
    """One scenario's call: from the trunk (a customer) or from an agent phone."""
    return await sipp.place_call(
        sc.caller_scenario, sc.did, duration_ms=sc.duration_ms, anonymous=sc.anonymous,
        caller=sc.caller, source_ip=sipp.PHONE_IP if sc.phone else "127.0.0.1",
        caller_name="Phone" if sc.phone else "Ravi Kumar")


class RawAmi:
    """A bare AMI connection that keeps every byte Asterisk sends after login."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.times: list[tuple[int, float]] = []  # (offset in buf, wall time) of each read
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
            self.times.append((len(self.buf), time.time()))
            self.buf += data
            self.last_rx = time.monotonic()

    def take(self) -> tuple[bytes, list[tuple[int, float]]]:
        out = bytes(self.buf)
        times = self.times
        self.buf.clear()
        self.times = []
        return out, times


async def record_all(names: list[str] | None = None, out: Path = FIXTURES, log=print,
                     dialplan: str = DEFAULT_DIALPLAN) -> None:
    lab = Lab()
    lab.up(log=log, dialplan=dialplan)
    out = fixture_dir(dialplan, out)
    out.mkdir(parents=True, exist_ok=True)
    ami = RawAmi()
    await ami.connect(lab.secret())
    pump = asyncio.create_task(ami.pump())
    cdr_from = lab.cdr_csv.stat().st_size if lab.cdr_csv.exists() else 0
    with sipp.AgentPhones(agent_hangup_ms=2000):
        for sc in STYLE_SCENARIOS[dialplan]:
            if names and sc.name not in names:
                continue
            ami.take()
            res = await place(sc)
            # Every channel's Hangup, then a quiet second (the Cdr events): the call is fully
            # logged. Bounded: a lost Hangup must not hang the recorder.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (
                    ami.buf.count(b"Event: Hangup\r\n") < ami.buf.count(b"Event: Newchannel\r\n")
                    or time.monotonic() - ami.last_rx < 1.0):
                await asyncio.sleep(0.1)
            data, times = ami.take()
            (out / f"{sc.name}.txt").write_bytes(data)
            if dialplan != DEFAULT_DIALPLAN:
                (out / f"{sc.name}.times").write_text(
                    "".join(f"{off} {t:.6f}\n" for off, t in times))
            log(f"recorded {sc.name}: sipp rc={res.returncode}, {data.count(b'Event: ')} events")
    pump.cancel()
    ami.writer.close()
    if lab.cdr_csv.exists():
        with lab.cdr_csv.open("rb") as fh:
            fh.seek(cdr_from)
            rows = fh.read()
        cdr_fixture = fixture_dir(dialplan, FIXTURES.parent / "cdr") / "Master.csv"
        cdr_fixture.parent.mkdir(parents=True, exist_ok=True)
        with cdr_fixture.open("ab") as fh:
            fh.write(rows)
        log(f"appended {len(rows.splitlines())} CDR rows to {cdr_fixture}")


#: Where recorded answers to the endpoint-inventory actions go (tests/unit/test_inventory.py).
INVENTORY_FIXTURES = FIXTURES / "pjsip"


async def record_inventory(name: str, username: str, secret: str,
                           out: Path = INVENTORY_FIXTURES) -> Path:
    """The raw answers of the running lab to the actions agent.ami.inventory sends, as the
    AMI user ``username``. Each ActionID names the request (``PJSIPShowEndpoint/ops1``), so a
    test can answer the same requests from the file."""
    reader, writer = await asyncio.open_connection("127.0.0.1", 5038)
    await reader.readline()  # banner
    writer.write(f"Action: Login\r\nActionID: login\r\nUsername: {username}\r\n"
                 f"Secret: {secret}\r\nEvents: off\r\n\r\n".encode())
    if b"Success" not in await reader.readuntil(b"\r\n\r\n"):
        raise RuntimeError(f"AMI login of {username!r} refused")
    raw = bytearray()

    async def ask(action: str, **headers: str) -> list[bytes]:
        aid = "/".join([action, *headers.values()])
        writer.write((f"Action: {action}\r\nActionID: {aid}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        blocks: list[bytes] = []
        while True:
            block = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if f"ActionID: {aid}\r\n".encode() not in block:
                continue
            raw.extend(block)
            blocks.append(block)
            first = blocks[0]
            if b"EventList: start" not in first or b"EventList: Complete" in block:
                return blocks

    endpoints = await ask("PJSIPShowEndpoints")
    for block in endpoints[1:]:
        for line in block.decode().split("\r\n"):
            if line.startswith("ObjectName: "):
                await ask("PJSIPShowEndpoint", Endpoint=line.split(": ", 1)[1])
    await ask("PJSIPShowRegistrationsOutbound")
    await ask("ExtensionStateList")
    writer.close()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.txt"
    path.write_bytes(bytes(raw))
    return path
