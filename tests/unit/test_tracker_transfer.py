"""Attended transfer, from hand-written AMI events in Asterisk 22's shapes (the lab's SIPp
phones cannot consult): the caller's record names the transfer target and counts the talk
until the caller leaves; the consult call is folded in, with no call_connected of its own."""

from __future__ import annotations

from agent.calls.tracker import CallTracker
from agent.models import CallRecord, Trigger

T0 = 1796030000.0


def ev(name: str, t: float, **headers: str) -> dict[str, str]:
    return {"Event": name, "Timestamp": f"{T0 + t:.6f}", **headers}


def chan(name: str, uid: str, lid: str, **more: str) -> dict[str, str]:
    return {"Channel": name, "Uniqueid": uid, "Linkedid": lid, **more}


CALLER = chan("PJSIP/provider-00000001", "A", "A", CallerIDNum="+919876543210",
              Context="incoming", Exten="18005550300")
ALICE = chan("PJSIP/alice-00000002", "A2", "A", CallerIDNum="2001", Context="phones", Exten="s")
CONSULT = chan("PJSIP/alice-00000003", "B", "B", CallerIDNum="2001", Context="phones",
               Exten="2002")
BOB = chan("PJSIP/bob-00000004", "B2", "B", CallerIDNum="2002", Context="phones", Exten="s")


def events() -> list[dict[str, str]]:
    return [
        ev("Newchannel", 0.0, ChannelState="4", **CALLER),
        ev("Newchannel", 0.1, ChannelState="0", **ALICE),
        ev("DialBegin", 0.1, **CALLER, DestChannel=ALICE["Channel"], DestUniqueid="A2",
           DestCallerIDNum="2001"),
        ev("Newstate", 1.0, ChannelState="6", **ALICE),
        ev("DialEnd", 1.0, **CALLER, DestChannel=ALICE["Channel"], DestUniqueid="A2",
           DialStatus="ANSWER"),
        # Alice puts the caller on hold and calls Bob: a second call.
        ev("Newchannel", 3.0, ChannelState="4", **CONSULT),
        ev("Newchannel", 3.1, ChannelState="0", **BOB),
        ev("DialBegin", 3.1, **CONSULT, DestChannel=BOB["Channel"], DestUniqueid="B2"),
        ev("Newstate", 4.0, ChannelState="6", **BOB),
        ev("DialEnd", 4.0, **CONSULT, DestChannel=BOB["Channel"], DestUniqueid="B2",
           DialStatus="ANSWER"),
        # REFER with Replaces: the caller is joined to Bob, Alice's two legs go.
        ev("AttendedTransfer", 6.0, Result="Success",
           OrigTransfererChannel=ALICE["Channel"], OrigTransfererUniqueid="A2",
           SecondTransfererChannel=CONSULT["Channel"], SecondTransfererUniqueid="B",
           TransfereeChannel=CALLER["Channel"], TransfereeUniqueid="A",
           TransferTargetChannel=BOB["Channel"], TransferTargetUniqueid="B2",
           DestType="Link", IsExternal="Yes"),
        ev("Hangup", 6.1, Cause="16", **ALICE),
        ev("Hangup", 6.1, Cause="16", **CONSULT),
        ev("HangupRequest", 10.0, Cause="16", **CALLER),
        ev("Hangup", 10.0, Cause="16", **CALLER),
        ev("Hangup", 10.1, Cause="16", **BOB),
    ]


def test_attended_transfer_names_the_target_and_emits_no_consult_connected() -> None:
    tracker = CallTracker(region="IN")
    out: list[CallRecord] = []
    for e in events():
        out += tracker.feed(e)
    assert tracker.warnings["internal_error"] == 0 and tracker.in_progress() == 0
    connected = [r for r in out if r.trigger is Trigger.CALL_CONNECTED]
    done = [r for r in out if r.trigger is Trigger.CALL_COMPLETED]
    assert [(r.call_id, r.agent) for r in connected] == [("A", "alice")]
    (r,) = done
    assert (r.call_id, r.direction.value, r.caller, r.agent) == (
        "A", "inbound", "+919876543210", "bob")
    assert r.talk_seconds == 9.0  # from Alice's answer (1.0) to the caller's hangup (10.0)
    assert r.hangup_by is not None and r.hangup_by.value == "caller"
