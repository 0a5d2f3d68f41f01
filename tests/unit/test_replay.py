"""Transcript splitting through panoramisk's own reader, and `aftercall replay`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agent.ami.transcript import iter_messages
from agent.ami.replay import replay, replay_lines
from agent.commands.replay import replay_file
from agent.errors import ConfigError
from agent.models import CallRecord, Trigger

AMI = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
FILES = sorted(AMI.glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_event_comes_out_once_in_order(path: Path) -> None:
    data = path.read_bytes()
    messages = list(iter_messages(data))
    assert len(messages) == data.count(b"\r\nTimestamp: ") == data.count(b"\r\nEvent: ") + 1
    stamps = [float(m["Timestamp"]) for m in messages]
    assert stamps == sorted(stamps)
    # Small reads split blocks (and headers) anywhere a line ends: same messages.
    assert [dict(m.items()) for m in iter_messages(data, read_size=97)] == [
        dict(m.items()) for m in messages]


def test_repeated_chanvariable_is_a_list_and_headers_are_case_insensitive() -> None:
    messages = list(iter_messages((AMI / "queue_answered.txt").read_bytes()))
    join = next(m for m in messages if m["Event"] == "QueueCallerJoin")
    assert join["ChanVariable"][:2] == ["SMS_TAG=Support", "TICKET=29083020"]
    assert join["linkedid"] == join["Linkedid"] == "aftercall-lab-1795942644.2"


def test_single_header_value_and_unterminated_last_block() -> None:
    data = (b"Event: Newchannel\r\nTimestamp: 1.5\r\nChanVariable: SMS_TAG=x\r\n\r\n"
            b"Event: Hangup\r\nTimestamp: 2.5\r\nCallerIDName: R\xc3\xa1vi")
    a, b = iter_messages(data)
    assert a["ChanVariable"] == "SMS_TAG=x"
    assert b["Event"] == "Hangup" and b["CallerIDName"] == "Rávi"


def test_responses_and_garbage_are_not_events() -> None:
    data = (b"Response: Success\r\nActionID: 1\r\nMessage: ok\r\n\r\n"
            b"no colon here\r\n\r\n\x00\xff\r\n\r\nEvent: Shutdown\r\nShutdown: Cleanly\r\n\r\n")
    assert [m["Event"] for m in iter_messages(data)] == ["Shutdown"]


def test_replay_matches_the_tracker_and_round_trips_as_json() -> None:
    path = AMI / "queue_answered.txt"
    records = replay(path, region="IN", agents={"2001": ("Priya", "+919812345678")})
    assert [r.trigger for r in records] == [Trigger.CALL_CONNECTED, Trigger.CALL_COMPLETED]
    lines = replay_lines(path, region="IN", agents={"2001": ("Priya", "+919812345678")})
    assert [CallRecord.from_dict(json.loads(line)) for line in lines] == records
    assert records[-1].agent_number == "+919812345678"


def test_replay_cli_prints_json_lines(tmp_path: Path) -> None:
    bs = (AMI / "busy.txt").read_bytes()
    cut = bs.rindex(b"Event: Hangup")  # drop the last Hangup: one call left open
    path = tmp_path / "t.txt"
    path.write_bytes((AMI / "queue_sales.txt").read_bytes() + bs[:cut])
    out, err = io.StringIO(), io.StringIO()
    assert replay_file(str(path), out=out, err=err) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["trigger"], r["queue"]) for r in rows] == [
        ("call_connected", "Sales"), ("call_completed", "Sales")]
    assert "1 call(s) still in progress" in err.getvalue()


def test_replay_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.txt"):
        replay(tmp_path / "nope.txt")


def test_replay_with_rules_prints_each_records_decisions(tmp_path: Path) -> None:
    # `aftercall replay FILE --rules rules.yaml`: what would be sent to whom, or why not;
    # the JSON lines stay call records (what `explain` takes).
    import io
    import json

    from devkit.harness import rules_with

    rules = rules_with(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert replay_file(str(AMI / "queue_answered.txt"), rules_path=str(rules), out=out,
                      err=err) == 0
    lines = out.getvalue().splitlines()
    records = [json.loads(ln) for ln in lines if not ln.startswith("#")]
    assert [r["trigger"] for r in records] == ["call_connected", "call_completed"]
    notes = [ln for ln in lines if ln.startswith("#")]
    assert any("agent-summary: agent +91******5678: Call from +919876543211" in ln
               for ln in notes)
    assert any("support-followup: not sent: talk time" in ln for ln in notes)
    assert not any("trigger is" in ln for ln in notes)
