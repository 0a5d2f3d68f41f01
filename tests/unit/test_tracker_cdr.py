"""Ground truth from Asterisk itself: every call recorded in the lab, on every dialplan style,
goes through the call tracker, and its record is compared with the CDR rows Asterisk wrote for
the same call (same Linkedid): direction, caller, DID, disposition, talk time, final agent.

What the CDR says is read here with as little interpretation as the columns allow; the only
facts from outside the CDR are the style's trunk endpoint (its pjsip.conf) and the number the
SIPp caller dialled (the scenario). The tracker knows trunks from phones the way the agent
does: from the style's PJSIP configuration as the lab's Asterisk answered agent.ami.inventory's
actions (tests/fixtures/ami/pjsip/STYLE_system.txt). Vanilla transcripts have no Timestamp headers
(timestampevents off): they are fed with the receive times recorded beside them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from agent.ami.inventory import Inventory, read_inventory
from agent.ami.transcript import iter_messages, recorded_answers
from agent.calls.pbx import Directory, PbxProfile, receive_clock
from agent.calls.tracker import CallTracker
from agent.lab.groundtruth import TRUNK, cdr_rows, truth
from agent.lab.record import STYLE_SCENARIOS, Scenario, fixture_dir
from agent.models import CallRecord, Trigger
from agent.rules.loader import load_rules
from agent.sms.numbers import classify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AMI, CDR = FIXTURES / "ami", FIXTURES / "cdr"
#: Scenarios whose CDR is known to say something else than a person would, each with why.
NOT_COMPARABLE = {
    # ours: the appointment line's classic AGI script answers nothing; the CDR row is fine but
    # the scenario predates the CDR fixture (its rows were recorded in another run).
}


def receive_times(style: str, name: str, data: bytes) -> Iterator[float]:
    """The receive time of each event of a transcript without Timestamp headers: the time of
    the read that completed it."""
    path = fixture_dir(style, AMI) / f"{name}.times"
    reads = [(int(o), float(t)) for o, t in (ln.split() for ln in path.read_text().split("\n")
                                             if ln.strip())]
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return
        if data[pos:end].strip():
            yield max(t for o, t in reads if o <= end)
        pos = end + 4


@cache
def inventory(style: str, user: str = "system") -> Inventory:
    """What the lab's Asterisk said of the style's endpoints, to an AMI user with ``system``
    (or ``least_privilege``)."""
    data = (AMI / "pjsip" / f"{style}_{user}.txt").read_bytes()
    return asyncio.run(read_inventory(recorded_answers(data)))


def track(style: str, sc: Scenario, agents: Directory | None = None, *,
          detect: bool = True) -> list[CallRecord]:
    data = (fixture_dir(style, AMI) / f"{sc.name}.txt").read_bytes()
    now = [0.0]
    stamped = b"\r\nTimestamp: " in data
    pbx = PbxProfile(detected=inventory(style).endpoints if detect else {})
    tracker = CallTracker(region="IN", agents=agents, pbx=pbx,
                          clock=None if stamped else (lambda: now[0]))
    times = None if stamped else receive_times(style, sc.name, data)
    out: list[CallRecord] = []
    for msg in iter_messages(data):
        if times is not None:
            now[0] = next(times)
        out += tracker.feed(msg)
    assert tracker.warnings["internal_error"] == 0
    assert stamped or tracker.time_source == "receive"
    return [r for r in out if r.trigger is Trigger.CALL_COMPLETED]


CASES = [
    pytest.param(style, sc, id=f"{style}-{sc.name}")
    for style, scenarios in STYLE_SCENARIOS.items()
    for sc in scenarios
    if (fixture_dir(style, AMI) / f"{sc.name}.txt").exists()
]


@pytest.mark.parametrize(("style", "sc"), CASES)
def test_every_recorded_call_matches_asterisks_own_cdr(style: str, sc: Scenario) -> None:
    if (style, sc.name) in NOT_COMPARABLE:
        pytest.skip(NOT_COMPARABLE[(style, sc.name)])
    calls = cdr_rows(fixture_dir(style, CDR) / "Master.csv")
    (record,) = track(style, sc)
    rows = calls.get(record.call_id)
    assert rows, f"no CDR row has Linkedid {record.call_id}"
    want = truth(TRUNK[style], sc.did, rows)
    # The record carries E.164 where the CDR has what the carrier sent (national, or +...).
    want_caller = classify(want.caller, "IN").e164 or want.caller
    assert (record.direction.value, record.caller, record.disposition.value) == (
        want.direction, want_caller, want.disposition)
    if want.direction == "inbound":
        assert record.did == sc.did
    # billsec is whole seconds, cut down, per row: each summed row may lose up to a second.
    high = want.billsec + want.rows_summed + 0.05
    low = 0.05 if want.queued and want.billsec else want.billsec - 0.05
    assert low <= record.talk_seconds <= high
    assert record.agent == want.agent
    assert record.started_at is not None and record.started_at.year >= 2026
    # Where a caller who reached nobody left is a tag, on the record as in the CDR's reading;
    # the PBX's own Answer() (ANSWERED, a billsec, no party B) is not talk: it is waiting.
    assert want.left_in is None or want.left_in in record.tags
    if want.held_billsec:
        assert record.answered_at is None and record.talk_seconds == 0.0
        assert want.held_billsec - 0.05 <= record.wait_seconds <= want.held_billsec + 1.05


# -- the bugs of issue 12, each on a real transcript ------------------------------------------

def one(style: str, name: str, **kw: object) -> CallRecord:
    sc = next(s for s in STYLE_SCENARIOS[style] if s.name == name)
    (record,) = track(style, sc, **kw)  # type: ignore[arg-type]
    return record


@pytest.mark.parametrize("style", ["freepbx", "vanilla"])
def test_direction_comes_from_the_trunk_not_a_context_named_from_trunk(style: str) -> None:
    # from-trunk-pjsip-carrier1 -> from-pstn (FreePBX) and [incoming] (vanilla): inbound, the
    # customer is the caller and the phone that answered is the agent.
    r = one(style, "answered_caller_hangup")
    assert (r.direction.value, r.caller, r.did) == ("inbound", "+919876543210", "18005550300")
    assert r.agent == {"freepbx": "2001", "vanilla": "alice"}[style]
    assert r.hangup_by is not None and r.hangup_by.value == "caller"
    # And a phone dialling out is outbound: the customer is the number it dialled.
    out = one(style, "outbound")
    assert (out.direction.value, out.caller) == ("outbound", "+919845012345")
    assert out.agent == {"freepbx": "2001", "vanilla": "alice"}[style]


def test_without_timestamp_headers_times_are_the_agents_receive_times() -> None:
    # Vanilla Asterisk: timestampevents off. The record's times are when the agent read the
    # events, so talk time is real and max_age does not think the call is 56 years old.
    r = one("vanilla", "answered_caller_hangup")
    assert r.started_at is not None and r.started_at.year == 2026
    assert 1.5 <= r.talk_seconds <= 3.0


@pytest.mark.parametrize("style", ["freepbx", "vanilla"])
def test_ringing_then_hangup_19_without_a_dial_is_no_answer_as_the_cdr_says(style: str) -> None:
    r = one(style, "ring_timeout")
    assert (r.disposition.value, r.hangup_cause) == ("missed", 19)


def test_directory_keyed_by_extension_finds_an_endpoint_named_otherwise() -> None:
    # vanilla: endpoint "alice" has caller id 2001; the directory says "2001".
    sc = next(s for s in STYLE_SCENARIOS["vanilla"] if s.name == "answered_caller_hangup")
    directory = Directory({"2001": ("Alice A", "+919812345678"), "PJSIP/carol": ("Carol", None),
                           "2099": ("Nobody", None)})
    (r,) = track("vanilla", sc, agents=directory)
    assert (r.agent, r.agent_name, r.agent_number) == ("alice", "Alice A", "+919812345678")
    sc = next(s for s in STYLE_SCENARIOS["vanilla"] if s.name == "answered_agent_hangup")
    (r,) = track("vanilla", sc, agents=directory)
    assert (r.agent, r.agent_name) == ("carol", "Carol")
    assert directory.unmatched() == ["2099"]


@pytest.mark.parametrize("style", ["freepbx", "vanilla"])
def test_blind_transfer_talk_time_runs_until_the_caller_leaves(style: str) -> None:
    # The first agent REFERs the caller to 2002 after 1.5 s; the caller talks 6 s in all.
    r = one(style, "blind_transfer")
    assert r.talk_seconds >= 5.5
    assert r.agent == {"freepbx": "2002", "vanilla": "bob"}[style]


def test_rules_pbx_section_names_trunks_and_the_pbx(tmp_path: Path) -> None:
    from agent.rules.tracking import pbx_profile
    from devkit.harness import rules_with

    path = rules_with(tmp_path, ("  trunks: []", "  trunks: [provider]"),
                      ("  inbound_contexts: []", "  inbound_contexts: from-carrier-*"))
    rules = load_rules(path)
    profile = pbx_profile(rules, "pbx-east")
    assert profile.trunks == {"provider"} and profile.inbound_contexts == ("from-carrier-*",)
    assert profile.origin("PJSIP/provider-0000000a", "weird", "2001").how == "pbx.trunks"
    data = (AMI / "vanilla" / "outbound.txt").read_bytes()
    tracker = CallTracker(pbx=profile, clock=lambda: 1796029130.0)
    records = [r for m in iter_messages(data) for r in tracker.feed(m)]
    done = [r for r in records if r.trigger is Trigger.CALL_COMPLETED]
    # The trunk leg of an outbound call is the customer, never the agent.
    assert [(r.pbx, r.direction.value, r.agent) for r in done] == [
        ("pbx-east", "outbound", "alice")]


def test_receive_clock_never_goes_back_when_the_wall_clock_does() -> None:
    wall, mono = [1796029000.0], [50.0]
    clock = receive_clock(lambda: wall[0], lambda: mono[0])
    first = clock()
    wall[0] -= 3600  # NTP steps the clock back an hour
    mono[0] += 2.5
    assert clock() == first + 2.5


@pytest.mark.parametrize(("style", "sc"), CASES)
def test_a_call_recovered_from_the_cdr_reads_as_the_live_one(style: str, sc: Scenario) -> None:
    # The same call, live (AMI) and recovered after an outage (Master.csv): same direction,
    # caller, disposition and agent, on every style.
    from agent.calls.cdr import build_records
    from agent.calls.cdr_rows import parse_lines

    (live,) = track(style, sc)
    text = (fixture_dir(style, CDR) / "Master.csv").read_text().splitlines()
    rows = [r for r in parse_lines(text).rows if r.linkedid == live.call_id]
    (recovered,) = build_records(rows, region="IN",
                                 pbx=PbxProfile(detected=inventory(style).endpoints))
    assert (recovered.direction, recovered.caller, recovered.disposition, recovered.agent) == (
        live.direction, live.caller, live.disposition, live.agent)
    reasons = {"left_in_ivr", "left_in_queue"}
    assert reasons.intersection(recovered.tags) == reasons.intersection(live.tags)
    if live.disposition.value != "answered":
        assert recovered.talk_seconds == live.talk_seconds == 0.0


def test_voicemail_is_seen_without_the_dialplan_class_and_tagged() -> None:
    # FreePBX style: no answer, then VoiceMail(2008@default,u); the least-privilege user has
    # no dialplan class, so the Cdr event (cdr class) tells. The caller hung up during the
    # greeting (no MessageWaiting for the mailbox), so no message was left.
    r = one("freepbx", "voicemail")
    assert (r.disposition.value, r.agent) == ("voicemail", "2008")
    assert "hung_up_at_greeting" in r.tags and "voicemail_left" not in r.tags
    data = (AMI / "freepbx" / "voicemail.txt").read_bytes()
    assert b"Event: Newexten" not in data and b"Event: MessageWaiting" not in data


def test_a_message_left_in_the_mailbox_tags_voicemail_left() -> None:
    # The same call with the MessageWaiting (call class) app_voicemail raises once it saved
    # a message, as it does before the caller's channel ends: put where Asterisk sends it.
    data = (AMI / "freepbx" / "voicemail.txt").read_bytes()
    mwi = (b"Event: MessageWaiting\r\nPrivilege: call,all\r\nTimestamp: 1796029067.500000\r\n"
           b"Mailbox: 2008@default\r\nWaiting: 1\r\nNew: 1\r\nOld: 0\r\n\r\n")
    at = data.index(b"Event: Cdr\r\n")
    tracker = CallTracker(region="IN")
    records = [r for m in iter_messages(data[:at] + mwi + data[at:]) for r in tracker.feed(m)]
    (r,) = [r for r in records if r.trigger is Trigger.CALL_COMPLETED]
    assert r.disposition.value == "voicemail" and "voicemail_left" in r.tags


# -- callers who hang up after the PBX answered, before anyone did ----------------------------

@pytest.mark.parametrize("style", ["ours", "freepbx", "vanilla", "carrier"])
def test_a_caller_who_leaves_during_the_greeting_abandoned_in_the_ivr(style: str) -> None:
    # Answer(), then a greeting Playback; the caller hangs up 2 s into it. Asterisk's CDR row:
    # ANSWERED, billsec 2, lastapp Playback, no dstchannel (the PBX's Answer, not a person's).
    # Live and recovered from that row, the record says: nobody answered, where the caller left.
    r = one(style, "greeting_hangup")
    assert (r.disposition.value, r.answered_at, r.talk_seconds, r.agent) == (
        "abandoned", None, 0.0, None)
    assert "left_in_ivr" in r.tags and r.hangup_by is not None and r.hangup_by.value == "caller"
    assert 1.9 <= r.wait_seconds <= 3.0
    (row,) = cdr_rows(fixture_dir(style, CDR) / "Master.csv")[r.call_id]
    assert (row["disposition"], row["billsec"], row["dstchannel"]) == ("ANSWERED", "2", "")
    assert row["lastapp"] == "Playback"


@pytest.mark.parametrize("style", ["ours", "freepbx"])
def test_a_caller_who_leaves_a_queue_before_any_member_rang_abandoned_in_the_queue(
        style: str) -> None:
    # The queue's only member is paused: no AgentCalled, no member channel. The CDR's one row
    # is ANSWERED (the Answer() before Queue) with no dstchannel.
    r = one(style, "queue_wait_hangup")
    assert (r.disposition.value, r.talk_seconds, r.agent) == ("abandoned", 0.0, None)
    assert r.queue == {"ours": "Callback", "freepbx": "403"}[style]
    assert "left_in_queue" in r.tags
    data = (fixture_dir(style, AMI) / "queue_wait_hangup.txt").read_bytes()
    assert b"Event: AgentCalled" not in data and b"Event: QueueCallerAbandon" in data


def test_a_ring_group_whose_busy_phone_refused_names_the_phone_that_rang_on() -> None:
    # FreePBX ring group 601 dials 2009 (busy: 486 at once) and 2008 (rings until the caller
    # gives up). The tracker heard 2009 dialled last; the agent is 2008, as the CDR says (its
    # row NO ANSWER, 2009's BUSY), live and recovered alike.
    from agent.calls.cdr import build_records
    from agent.calls.cdr_rows import parse_lines

    r = one("freepbx", "ring_group_gives_up")
    assert (r.disposition.value, r.agent, r.talk_seconds) == ("missed", "2008", 0.0)
    text = (CDR / "freepbx" / "Master.csv").read_text().splitlines()
    rows = [row for row in parse_lines(text).rows if row.linkedid == r.call_id]
    for order in (rows, rows[::-1]):  # whatever order the rows were written in
        renumbered = [replace(row, sequence=i) for i, row in enumerate(order)]
        (recovered,) = build_records(renumbered, region="IN")
        assert (recovered.disposition, recovered.agent) == (r.disposition, "2008")
