"""The lab is a real Asterisk 22: log in with panoramisk, place each SIPp scenario, and check
the events Asterisk really sends."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from panoramisk import Manager

from agent.lab import sipp

pytestmark = pytest.mark.lab


class Collector:
    """Collects events per Linkedid until every channel of a call has hung up and its Cdr
    records have arrived."""

    def __init__(self) -> None:
        self.events: list = []
        self.by_call: dict[str, list] = defaultdict(list)
        self.open: dict[str, set[str]] = defaultdict(set)
        self.done: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.first: asyncio.Future | None = None

    def __call__(self, manager: Manager, event) -> None:
        name = event.get("Event")
        linked = event.get("Linkedid") or ""
        if not linked and name == "Cdr":
            linked = next((k for k, v in self.by_call.items()
                           if any(e.get("Uniqueid") == event.get("UniqueID") for e in v)), "")
        if not linked:
            return
        self.by_call[linked].append(event)
        if name == "Newchannel":
            self.open[linked].add(event["Uniqueid"])
            if self.first is not None and not self.first.done():
                self.first.set_result(linked)
        elif name == "Hangup":
            self.open[linked].discard(event["Uniqueid"])
        # Asterisk may send the Cdr before or after the last Hangup, and app_queue reports a
        # connected member's AgentComplete only after the bridge is gone, so that can come last.
        names = {e["Event"] for e in self.by_call[linked]}
        queue_done = "AgentConnect" not in names or "AgentComplete" in names
        if not self.open[linked] and {"Cdr", "Hangup"} <= names and queue_done:
            self.done[linked].set()


async def _call(manager_collector, scenario: str, did: str, **kw) -> tuple[sipp.CallResult, list]:
    collector: Collector = manager_collector
    collector.first = asyncio.get_running_loop().create_future()
    result = await sipp.place_call(scenario, did, **kw)
    linked = await asyncio.wait_for(collector.first, 5)
    await asyncio.wait_for(collector.done[linked].wait(), 10)
    return result, collector.by_call[linked]


@pytest.fixture
async def ami(lab, phones, ami_secret):
    collector = Collector()
    manager = Manager(host="127.0.0.1", port=5038, username="aftercall", secret=ami_secret,
                      ping_delay=3600)
    manager.register_event("*", collector)
    await manager.connect()
    for _ in range(100):
        if manager.authenticated:
            break
        await asyncio.sleep(0.02)
    assert manager.authenticated, "panoramisk could not log in to the lab AMI"
    yield collector
    manager.close()


def _names(events) -> list[str]:
    return [e["Event"] for e in events]


def _vars(event) -> dict[str, str]:
    raw = event.get("ChanVariable") or []
    raw = [raw] if isinstance(raw, str) else raw
    return dict(v.split("=", 1) for v in raw)


async def test_answered_call_events(ami):
    res, events = await _call(ami, sipp.TALK, sipp.DID_DIRECT, duration_ms=1000)
    assert res.ok, res.output
    hangups = [e for e in events if e["Event"] == "Hangup"]
    news = [e for e in events if e["Event"] == "Newchannel"]
    assert len(hangups) == len(news) == 2  # caller leg and agent leg
    dial_end = next(e for e in events if e["Event"] == "DialEnd")
    assert dial_end["DialStatus"] == "ANSWER"
    cdr = next(e for e in events if e["Event"] == "Cdr")
    assert cdr["Disposition"] == "ANSWERED"
    assert 0 <= int(cdr["BillableSeconds"]) <= 2
    assert news[0]["Exten"] == sipp.DID_DIRECT
    assert news[0]["CallerIDNum"] == "+919876543210"


async def test_busy_call_events(ami):
    res, events = await _call(ami, sipp.REFUSED, sipp.DID_BUSY)
    assert res.ok, res.output
    assert next(e for e in events if e["Event"] == "DialEnd")["DialStatus"] == "BUSY"
    assert next(e for e in events if e["Event"] == "Cdr")["Disposition"] == "BUSY"
    assert _names(events).count("Hangup") == 2


async def test_no_answer_call_events(ami):
    res, events = await _call(ami, sipp.REFUSED, sipp.DID_NO_ANSWER)
    assert res.ok, res.output
    assert next(e for e in events if e["Event"] == "DialEnd")["DialStatus"] == "NOANSWER"
    assert next(e for e in events if e["Event"] == "Cdr")["Disposition"] == "NO ANSWER"


async def test_queue_call_exports_tag_and_ticket(ami):
    res, events = await _call(ami, sipp.TALK, sipp.DID_SUPPORT, duration_ms=1000)
    assert res.ok, res.output
    names = _names(events)
    for expected in ("QueueCallerJoin", "AgentCalled", "AgentConnect", "QueueCallerLeave",
                     "AgentComplete", "BridgeEnter"):
        assert expected in names, f"{expected} missing from {names}"
    connect = next(e for e in events if e["Event"] == "AgentConnect")
    assert connect["Queue"] == "Support" and connect["Interface"] == "PJSIP/2001"
    last_hangup = [e for e in events if e["Event"] == "Hangup"][-1]
    v = _vars(last_hangup)
    assert v["SMS_TAG"] == "Support"
    assert v["TICKET"].isdigit() and len(v["TICKET"]) == 8


async def test_queue_abandon_events(ami):
    res, events = await _call(ami, sipp.TALK, sipp.DID_BILLING, duration_ms=1500)
    assert res.ok, res.output
    assert "QueueCallerAbandon" in _names(events)
    assert "AgentConnect" not in _names(events)


async def test_agent_hangs_up_first(ami):
    res, events = await _call(ami, sipp.WAIT_FOR_BYE, sipp.DID_AGENT_HANGS_UP)
    assert res.ok, res.output
    first = next(e for e in events if e["Event"] in ("HangupRequest", "SoftHangupRequest", "Hangup"))
    assert first["Channel"].startswith("PJSIP/2003-")


async def test_anonymous_caller(ami):
    res, events = await _call(ami, sipp.TALK, sipp.DID_SALES, duration_ms=500, anonymous=True)
    assert res.ok, res.output
    first = next(e for e in events if e["Event"] == "Newchannel")
    assert first["CallerIDNum"].lower() in ("anonymous", "<unknown>", "")


async def test_classic_agi_script_raises_attach_event_and_fills_cdr_userfield(ami):
    """asterisk_conf/agi-bin/aftercall-attach runs under the root's own Python with pyst2."""
    res, events = await _call(ami, sipp.TALK, sipp.DID_APPOINTMENT, duration_ms=500)
    assert res.ok, res.output
    [attach] = [e for e in events if e["Event"] == "UserEvent"]
    assert attach["UserEvent"] == "AftercallAttach"
    assert attach["Attach"] == "tag=appointment&CLINIC=Koramangala"
    assert attach["Channel"].startswith("PJSIP/trunk-") and attach["Linkedid"]
    [cdr] = [e for e in events if e["Event"] == "Cdr"]
    assert cdr["UserField"] == "tag=appointment;CLINIC=Koramangala"


async def test_support_call_writes_tag_and_ticket_into_the_cdr(ami):
    res, events = await _call(ami, sipp.TALK, sipp.DID_SUPPORT, duration_ms=500)
    assert res.ok, res.output
    ticket = _vars(next(e for e in events if e["Event"] == "QueueCallerJoin"))["TICKET"]
    [cdr] = [e for e in events if e["Event"] == "Cdr"]
    assert cdr["UserField"] == f"SMS_TAG=Support;TICKET={ticket}"
