"""`aftercall calls --follow` against the lab: every SIPp scenario, placed on the real Asterisk
with the command connected, prints exactly one completed record per call with the right fields
(and one connected record for answered calls)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from agent.lab import sipp
from agent.lab.record import SCENARIOS

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
RAVI = "+919876543210"

# scenario -> (caller, did, disposition, queue, agent, agent_name, hangup_by, tags). Names come
# from rules.yaml's directory, else the phone's caller-id name (Meera), else the queue member's.
# No FastAGI server runs here (`calls` only listens), so Sales calls lack the hook's `lead` tag.
EXPECTED = {
    "answered_caller_hangup": (RAVI, "18005550300", "answered", None, "2001", "Priya", "caller", []),
    "answered_agent_hangup": (RAVI, "18005550600", "answered", None, "2003", "Meera", "agent", []),
    "no_answer": (RAVI, "18005550800", "missed", None, "2008", None, "system", []),
    "caller_gives_up": (RAVI, "18005550800", "missed", None, "2008", None, "caller", []),
    "busy": (RAVI, "18005550400", "busy", None, "2009", None, "system", []),
    "queue_answered": ("+919876543211", "18005550100", "answered", "Support", "2001", "Priya",
                       "caller", ["Support"]),
    "queue_sales": ("+14155550123", "18005550200", "answered", "Sales", "2002", "Arjun", "caller",
                    ["Sales"]),
    "queue_abandoned": (RAVI, "18005550500", "abandoned", "Billing", "2008", "Nobody", "caller",
                        ["Billing", "left_in_queue"]),
    "anonymous": ("anonymous", "18005550200", "answered", "Sales", "2002", "Arjun", "caller",
                  ["Sales"]),
    "appointment": (RAVI, "18005550700", "answered", None, "2002", "Arjun", "caller",
                    ["appointment"]),
}


class Follower:
    """`aftercall calls --follow` as a subprocess; its stdout read as JSON records."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def logged_in(self) -> None:
        assert self.proc.stderr is not None
        async with asyncio.timeout(15):
            while b"ami_logged_in" not in await self.proc.stderr.readline():
                pass

    async def records_until_completed(self) -> list[dict]:
        """The records printed up to and including the next call_completed."""
        assert self.proc.stdout is not None
        out: list[dict] = []
        async with asyncio.timeout(20):
            while not out or out[-1]["trigger"] != "call_completed":
                line = await self.proc.stdout.readline()
                assert line, "aftercall calls exited early"
                out.append(json.loads(line))
        return out


async def start_follow(secret: str, *extra: str) -> Follower:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "calls", "--rules", str(REPO / "rules.yaml"), *extra,
        cwd=REPO, env={**os.environ, "AFTERCALL_AMI_SECRET": secret},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    follower = Follower(proc)
    await follower.logged_in()
    return follower


async def test_follow_prints_one_record_per_call_for_every_scenario(lab, phones, ami_secret):
    f = await start_follow(ami_secret, "--follow")
    seen: dict[str, tuple] = {}
    try:
        ids: set[str] = set()
        for sc in SCENARIOS:
            res = await sipp.place_call(sc.caller_scenario, sc.did, duration_ms=sc.duration_ms,
                                        anonymous=sc.anonymous, caller=sc.caller)
            assert res.ok or sc.caller_scenario == sipp.REFUSED, res.output
            records = await f.records_until_completed()
            done = records[-1]
            assert {r["call_id"] for r in records} == {done["call_id"]}, sc.name
            assert done["call_id"] not in ids, f"{sc.name}: a call reported twice"
            ids.add(done["call_id"])
            connected = [r for r in records if r["trigger"] == "call_connected"]
            exp = EXPECTED[sc.name]
            got = (done["caller"], done["did"], done["disposition"], done["queue"], done["agent"],
                   done["agent_name"], done["hangup_by"], sorted(done["tags"]))
            seen[sc.name] = got
            assert len(connected) == (1 if exp[2] == "answered" else 0), sc.name
            if sc.name in ("answered_caller_hangup", "queue_sales", "appointment"):
                # The caller hangs up after SIPp's pause: talk time within a second of it.
                assert done["talk_seconds"] == pytest.approx(sc.duration_ms / 1000, abs=1.0)
        assert len(ids) == len(SCENARIOS)
        assert seen == {name: (*exp[:7], sorted(exp[7])) for name, exp in EXPECTED.items()}
        assert f.proc.returncode is None, "--follow keeps running"
    finally:
        f.proc.terminate()
        await f.proc.wait()


async def test_without_follow_it_exits_after_the_first_completed_call(lab, phones, ami_secret):
    f = await start_follow(ami_secret)
    await sipp.place_call(sipp.TALK, sipp.DID_DIRECT, duration_ms=300)
    records = await f.records_until_completed()
    assert records[-1]["did"] == sipp.DID_DIRECT
    async with asyncio.timeout(10):
        assert await f.proc.wait() == 0
