"""Property tests: garbage in never raises from the tracker, and its memory stays bounded."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.ami.transcript import iter_messages
from agent.calls.tracker import CallTracker
from agent.models import Trigger

AMI = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
TRANSCRIPTS = {p.stem: p.read_bytes() for p in sorted(AMI.glob("*.txt"))}
EVENTS = ["Newchannel", "Newstate", "NewCallerid", "NewAccountCode", "Newexten", "VarSet",
          "DialBegin", "DialEnd", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon",
          "AgentCalled", "AgentConnect", "AgentComplete", "BridgeEnter", "BridgeLeave",
          "HangupRequest", "SoftHangupRequest", "Hangup", "CoreShowChannel", "TestEvent"]
HEADERS = ["Event", "Timestamp", "Channel", "Uniqueid", "Linkedid", "ChannelState",
           "CallerIDNum", "CallerIDName", "Context", "Exten", "Language", "AccountCode",
           "ChanVariable", "DestChannel", "DestUniqueid", "DestCallerIDName", "DialStatus",
           "Queue", "Interface", "MemberName", "Reason", "Cause", "Application", "Variable",
           "Value", "Duration"]
MAX_CALLS = 20

# A handful of ids so that random events collide into the same calls and channels.
ids = st.sampled_from(["u1", "u2", "u3", "l1", "", "Local/x;1", "PJSIP/2001-00000001"])
scalar = st.one_of(
    ids,
    st.sampled_from(["6", "0", "ANSWER", "BUSY", "16", "17", "-1", "1e309", "nan", "from-trunk",
                     "SMS_TAG=a,b", "=", "caller", "agent", "VoiceMail", "99:99:99", "1.5"]),
    st.text(max_size=30),
    st.integers(min_value=257, max_value=20_000).map(lambda n: "9" * n),
)
value = st.one_of(scalar, st.lists(scalar, max_size=4), st.none(), st.integers(), st.binary(max_size=8))
event = st.fixed_dictionaries(
    {"Event": st.one_of(st.sampled_from(EVENTS), value)},
    optional={h: value for h in HEADERS[1:]},
)


def _check(tracker: CallTracker) -> None:
    assert tracker.warnings["internal_error"] == 0
    assert 0 <= tracker.in_progress() <= MAX_CALLS


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, max_size=40), st.floats())
def test_random_events_never_raise(events: list[dict[str, object]], now: float) -> None:
    tracker = CallTracker(max_calls=MAX_CALLS, stale_after_s=60)
    for ev in events:
        records = tracker.feed(ev)  # type: ignore[arg-type]
        assert isinstance(records, list)
        _check(tracker)
    tracker.attach("u1", tags=["t", 3], vars={"K": "v", 1: "x"})  # type: ignore[list-item,dict-item]
    tracker.resync(events[:5], now_ts=now)  # type: ignore[arg-type]
    _check(tracker)
    tracker.evict_stale(float("inf"))
    assert tracker.in_progress() == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=200))
def test_unique_garbage_calls_stay_bounded(seed: int, n: int) -> None:
    tracker = CallTracker(max_calls=MAX_CALLS)
    for i in range(n):
        tracker.feed({"Event": "Newchannel", "Uniqueid": f"g{seed}.{i}", "Linkedid": f"g{seed}.{i}",
                      "Channel": f"PJSIP/x-{i:08x}", "Timestamp": str(i)})
        _check(tracker)
    assert tracker.in_progress() == min(n, MAX_CALLS)
    assert tracker.warnings["calls_overflow"] == max(0, n - MAX_CALLS)


edit = st.tuples(st.sampled_from(["drop", "dup", "swap", "flip", "cut"]),
                 st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=255))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(TRANSCRIPTS)), min_size=1, max_size=3),
       st.lists(edit, max_size=12))
def test_mangled_byte_streams_never_raise(names: list[str], edits: list[tuple[str, int, int]]) -> None:
    blocks = [b for n in names for b in TRANSCRIPTS[n].split(b"\r\n\r\n") if b]
    data = bytearray()
    for kind, pos, byte in edits:
        i = pos % len(blocks)
        if kind == "drop" and len(blocks) > 1:
            del blocks[i]
        elif kind == "dup":
            blocks.insert(i, blocks[i])
        elif kind == "swap":
            j = (i + byte) % len(blocks)
            blocks[i], blocks[j] = blocks[j], blocks[i]
        elif kind == "flip" and blocks[i]:
            b = bytearray(blocks[i])
            b[pos % len(b)] = byte
            blocks[i] = bytes(b)
        elif kind == "cut":
            blocks[i] = blocks[i][: pos % (len(blocks[i]) + 1)]
    data = bytearray(b"\r\n\r\n".join(blocks) + b"\r\n\r\n")
    tracker = CallTracker(max_calls=MAX_CALLS)
    completed: list[str] = []
    for msg in iter_messages(bytes(data), read_size=1 + sum(e[2] for e in edits) * 37):
        for rec in tracker.feed(msg):
            if rec.trigger is Trigger.CALL_COMPLETED:
                completed.append(rec.call_id)
        _check(tracker)
    # Duplicated and reordered events never make a second record for the same call.
    assert len(completed) == len(set(completed))
