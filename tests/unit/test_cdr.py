"""The CSV CDR parser and record builder against the lab's real Master.csv, and its tail."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ami.transcript import iter_messages
from agent.calls.cdr import CdrTail, build_record, build_records, group_calls
from agent.calls.cdr_rows import (
    CDR_COLUMNS,
    SOURCE_VAR,
    CdrRow,
    CdrRowError,
    parse_line,
    parse_lines,
    parse_userfield,
)
from agent.calls.tracker import CallTracker
from agent.models import CallRecord, Direction, Disposition, Trigger

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MASTER = FIXTURES / "cdr" / "Master.csv"
AMI = FIXTURES / "ami"
AGENTS = {"2001": ("Priya S", "+919812345678"), "2002": ("Arjun", None)}


def fixture_rows() -> tuple[CdrRow, ...]:
    parsed = parse_lines(MASTER.read_text().splitlines())
    assert parsed.problems == ()
    return parsed.rows


def cdr_records() -> dict[str, CallRecord]:
    return {r.call_id: r for r in build_records(fixture_rows(), region="IN", agents=AGENTS)}


def row(**over: str) -> str:
    """A cdr_csv line: the lab's answered direct call, with columns replaced."""
    base = dict(zip(CDR_COLUMNS, [
        "acme", "+919876543210", "s", "did-18005550300", '"Ravi Kumar" <+919876543210>',
        "PJSIP/trunk-00000016", "PJSIP/2001-00000017", "Dial", "PJSIP/2001,20",
        "2026-11-29 07:31:48", "2026-11-29 07:31:48", "2026-11-29 07:31:50", "2", "2",
        "ANSWERED", "DOCUMENTATION", "lab-1.22", "", "acme", "lab-1.22", "24",
    ], strict=True))
    base.update(over)
    out = []
    for k in CDR_COLUMNS:
        v = base[k]
        # cdr_csv quotes strings, leaves an unset time empty and integers bare.
        if k in ("duration", "billsec", "sequence") or (k == "answer" and not v):
            out.append(v)
        else:
            out.append('"' + v.replace('"', '""') + '"')
    return ",".join(out)


def record_of(lines: Sequence[str], **kw: object) -> CallRecord:
    parsed = parse_lines(lines)
    assert parsed.problems == ()
    [legs] = group_calls(parsed.rows).values()
    return build_record(legs, region="IN", agents=AGENTS, **kw)  # type: ignore[arg-type]


# -- the real file -----------------------------------------------------------------------------

def test_fixture_columns_are_cdr_csv_with_lab_options() -> None:
    rows = fixture_rows()
    assert len(rows) == 41
    first = rows[0]
    assert (first.accountcode, first.src, first.dst, first.dcontext) == (
        "acme", "+919876543210", "s", "did-18005550100")
    assert first.clid == '"Ravi Kumar" <+919876543210>'
    assert (first.lastapp, first.lastdata) == ("Queue", "Support,r,,,60")
    assert first.start == datetime(2026, 11, 29, 7, 29, 43, tzinfo=UTC)
    assert (first.disposition, first.amaflags) == ("ANSWERED", "DOCUMENTATION")
    assert first.uniqueid == first.linkedid == "aftercall-lab-1795937383.0"
    assert first.sequence == 0
    unanswered = rows[1]
    assert unanswered.answer is None and unanswered.peeraccount == "acme"
    assert len(group_calls(rows)) == 34


def test_rows_of_a_call_are_in_sequence_order() -> None:
    calls = group_calls(reversed(fixture_rows()))
    busy = calls["aftercall-lab-1795937524.30"]
    assert [(r.lastapp, r.sequence) for r in busy] == [("Dial", 33), ("Hangup", 35)]


def tracker_record(name: str) -> CallRecord:
    tracker = CallTracker(agents=AGENTS, region="IN")
    out = [r for m in iter_messages((AMI / f"{name}.txt").read_bytes()) for r in tracker.feed(m)]
    [rec] = [r for r in out if r.trigger is Trigger.CALL_COMPLETED]
    return rec


def close(a: datetime | None, b: datetime | None, tol: float) -> bool:
    assert a is not None and b is not None
    return abs((a - b).total_seconds()) <= tol


# `aftercall lab record` appends the CDR rows of the calls it records to Master.csv: every
# transcript's call is in it, under the same Linkedid.
SCENARIOS = sorted(p.stem for p in AMI.glob("*.txt"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_cdr_record_agrees_with_the_tracker_on_the_same_call(name: str) -> None:
    live = tracker_record(name)
    cdr = cdr_records()[live.call_id]
    same = ("call_id", "trigger", "caller", "caller_name", "did", "direction", "queue", "agent",
            "agent_number", "disposition")
    assert {f: getattr(cdr, f) for f in same} == {f: getattr(live, f) for f in same}
    if live.agent in AGENTS:
        assert cdr.agent_name == live.agent_name
    # cdr_csv never logs channel variables: tags and variables reach the CDR only through the
    # userfield the dialplan sets (Support's tag and ticket; the classic AGI script's pairs).
    userfield = {"18005550100": {"SMS_TAG": "Support", "TICKET": live.vars.get("TICKET")},
                 "18005550700": {"tag": "appointment", "CLINIC": "Koramangala"}}.get(live.did, {})
    assert cdr.vars == {"accountcode": live.vars["accountcode"], SOURCE_VAR: "cdr", **userfield}
    # Where a caller who reached nobody left is read from the rows themselves.
    left = tuple(t for t in live.tags if t in ("left_in_ivr", "left_in_queue"))
    assert cdr.tags == (live.tags if userfield else left)
    assert cdr.hangup_cause is None and cdr.hangup_by is None
    # CDR times are whole seconds, truncated.
    assert close(cdr.started_at, live.started_at, 1.0)
    assert close(cdr.ended_at, live.ended_at, 1.0)
    assert cdr.duration_seconds == pytest.approx(live.duration_seconds, abs=1.0)
    if live.disposition is not Disposition.ANSWERED:
        assert cdr.answered_at is None and cdr.talk_seconds == 0.0
        assert cdr.wait_seconds == cdr.duration_seconds
    elif live.queue is None:  # a direct Dial(): the CDR's answer is the agent's
        assert close(cdr.answered_at, live.answered_at, 1.0)
        assert cdr.talk_seconds == pytest.approx(live.talk_seconds, abs=1.0)
        assert cdr.wait_seconds == pytest.approx(live.wait_seconds, abs=1.0)
    else:  # a queue: the CDR's answer is the IVR's Answer(), before the agent's
        assert cdr.answered_at is not None and live.answered_at is not None
        assert cdr.answered_at <= live.answered_at
        assert cdr.talk_seconds >= live.talk_seconds - 1.0


def test_every_fixture_call_gets_a_plausible_record() -> None:
    recs = cdr_records()
    counts: dict[Disposition, int] = {}
    for r in recs.values():
        counts[r.disposition] = counts.get(r.disposition, 0) + 1
        assert r.direction is Direction.INBOUND and r.did and r.did.startswith("1800555")
        assert r.started_at is not None and r.ended_at is not None
        assert r.started_at <= r.ended_at
        assert r.vars[SOURCE_VAR] == "cdr"
        if r.queue:
            assert r.did in ("18005550100", "18005550200", "18005550500", "18005551500")
    assert counts == {Disposition.ANSWERED: 19, Disposition.BUSY: 4, Disposition.MISSED: 5,
                      Disposition.ABANDONED: 6}
    # The long calls were still up when the lab stopped; their rows are written at the end.
    long = recs["aftercall-lab-1795937384.2"]
    assert (long.talk_seconds, long.duration_seconds, long.agent) == (309.0, 309.0, "2003")
    assert list(recs)[-1] == "aftercall-lab-1796052428.1"  # ordered by end, then id


# -- dispositions from CDR rows ----------------------------------------------------------------

QUEUE = {"lastapp": "Queue", "lastdata": "Billing,r,,,60", "dcontext": "did-18005550500",
             "dstchannel": "PJSIP/2008-00000025"}


def test_queue_abandon_is_told_from_an_answered_queue_call() -> None:
    # Both caller legs were answered by the IVR; only party B's fate differs.
    answered = record_of([row(**{**QUEUE, "disposition": "ANSWERED"})])
    abandoned = record_of([row(**{**QUEUE, "disposition": "NO ANSWER"})])
    assert answered.disposition is Disposition.ANSWERED and answered.queue == "Billing"
    assert abandoned.disposition is Disposition.ABANDONED and abandoned.answered_at is None
    assert abandoned.agent == "2008"


def test_queue_that_timed_out_and_went_on_is_missed() -> None:
    rec = record_of([
        row(**{**QUEUE, "disposition": "NO ANSWER", "sequence": "1"}),
        row(lastapp="Playback", lastdata="goodbye", dstchannel="", disposition="ANSWERED",
            sequence="3"),
    ])
    assert rec.disposition is Disposition.MISSED and rec.queue == "Billing"


@pytest.mark.parametrize(("over", "expected"), [
    ({"disposition": "BUSY", "answer": ""}, Disposition.BUSY),
    ({"disposition": "CONGESTION", "answer": ""}, Disposition.FAILED),
    ({"disposition": "FAILED", "answer": ""}, Disposition.FAILED),
    ({"disposition": "NO ANSWER", "answer": ""}, Disposition.MISSED),
    ({"lastapp": "VoiceMail", "lastdata": "2001@default", "dstchannel": "", "disposition": "ANSWERED"},
     Disposition.VOICEMAIL),
    # The PBX answered, the caller left during the greeting (abandoned, tag left_in_ivr) ...
    ({"lastapp": "Playback", "lastdata": "welcome", "dstchannel": "", "disposition": "ANSWERED"},
     Disposition.ABANDONED),
    # ... or the dialplan itself hung up after it: a call nobody took over.
    ({"lastapp": "Hangup", "lastdata": "", "dstchannel": "", "disposition": "ANSWERED"},
     Disposition.MISSED),
    ({"dstchannel": "", "disposition": "BUSY", "answer": "", "lastapp": "Hangup"}, Disposition.BUSY),
])
def test_dispositions(over: dict[str, str], expected: Disposition) -> None:
    assert record_of([row(**over)]).disposition is expected


def test_transfer_agent_is_the_last_to_answer() -> None:
    rec = record_of([
        row(sequence="1", end="2026-11-29 07:31:49"),
        row(sequence="3", dstchannel="PJSIP/2002-00000019", start="2026-11-29 07:31:49",
            answer="2026-11-29 07:31:49", end="2026-11-29 07:32:20", billsec="31",
            duration="31"),
    ])
    assert (rec.agent, rec.agent_name) == ("2002", "Arjun")
    assert rec.answered_at == datetime(2026, 11, 29, 7, 31, 48, tzinfo=UTC)
    assert rec.ended_at == datetime(2026, 11, 29, 7, 32, 20, tzinfo=UTC)
    assert rec.duration_seconds == 32.0 and rec.talk_seconds == 32.0  # capped at the duration


def test_outbound_and_internal_calls_from_an_agent_phone() -> None:
    out = record_of([row(src="2001", clid='"Priya" <2001>', dst="+919812340000",
                         dcontext="from-agents", channel="PJSIP/2001-00000040",
                         dstchannel="PJSIP/trunk-00000041")])
    assert (out.direction, out.caller, out.agent, out.agent_name, out.did) == (
        Direction.OUTBOUND, "+919812340000", "2001", "Priya S", None)
    internal = record_of([row(src="2001", dst="2002", dcontext="from-agents",
                              channel="PJSIP/2001-00000042", dstchannel="PJSIP/2002-00000043")])
    assert (internal.direction, internal.caller, internal.agent) == (
        Direction.INTERNAL, "2002", "2001")


def test_national_caller_and_did_before_the_goto() -> None:
    # Hung up while still in from-trunk: dst is the DID itself.
    rec = record_of([row(src="09876543210", clid="09876543210", dst="18005550300",
                         dcontext="from-trunk", dstchannel="", lastapp="NoOp",
                         disposition="NO ANSWER", answer="")])
    assert (rec.caller, rec.caller_name, rec.did) == ("+919876543210", None, "18005550300")
    assert rec.disposition is Disposition.MISSED and rec.agent is None


def test_leg_without_the_originator_row_is_marked_partial() -> None:
    rec = record_of([row(uniqueid="lab-1.23")])
    assert rec.vars["aftercall_incomplete"] == "cdr_partial"


def test_local_time_csv_is_converted_to_utc() -> None:
    [r] = parse_lines([row()], tz=ZoneInfo("Asia/Kolkata")).rows
    assert r.start == datetime(2026, 11, 29, 2, 1, 48, tzinfo=UTC)


# -- userfield ---------------------------------------------------------------------------------

def test_userfield_pairs_become_tags_vars_and_language() -> None:
    uf = "SMS_TAG=Support,vip;TICKET=29072194; tag=callback ;SMS_LANG=hi;junk;=x;EMPTY="
    assert parse_userfield(uf) == (
        ("Support", "vip", "callback"),
        {"SMS_TAG": "Support,vip", "TICKET": "29072194", "tag": "callback", "SMS_LANG": "hi"},
    )
    rec = record_of([row(userfield=uf)])
    assert rec.tags == ("Support", "vip", "callback")
    assert rec.vars["TICKET"] == "29072194" and rec.language == "hi"
    assert rec.vars["accountcode"] == "acme"


def test_userfield_of_later_rows_wins() -> None:
    rec = record_of([row(sequence="1", userfield="TICKET=1;tags=a"),
                     row(sequence="2", userfield="TICKET=2;tags=b,a", dstchannel="")])
    assert rec.vars["TICKET"] == "2" and rec.tags == ("a", "b")


# -- malformed input ---------------------------------------------------------------------------

def test_malformed_lines_are_reported_by_line_and_skipped() -> None:
    good = row()
    lines = [
        good,
        "",
        good.rsplit(",", 2)[0],  # two columns short
        row(start="29/11/2026 07:31:48"),
        row(duration="-1"),
        row(linkedid=""),
        '"acme","unterminated,' + good,
        "x" * 5000,
        row(sequence="25"),
    ]
    parsed = parse_lines(lines, source="Master.csv")
    assert [r.line for r in parsed.rows] == [1, 9]
    got = {p.line: p.reason for p in parsed.problems}
    assert set(got) == {3, 4, 5, 6, 7, 8}
    assert "expected 21 columns" in got[3] and "got 19" in got[3]
    assert got[4].startswith("start: not a time")
    assert got[5].startswith("duration:")
    assert got[6] == "linkedid: empty"
    assert "longer than" in got[8]
    assert str(parsed.problems[0]).startswith("Master.csv:3: ")
    # Reasons name the place, never the row's content (caller numbers).
    assert not any("9876543210" in str(p) for p in parsed.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_row_or_a_row_error(text: str) -> None:
    try:
        parse_line(text, 7)
    except CdrRowError as exc:
        assert exc.line == 7 and str(exc).startswith("line 7")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(fixture_rows()), min_size=1, max_size=6))
def test_any_subset_of_real_rows_builds_records(rows: list[CdrRow]) -> None:
    for rec in build_records(rows, region="IN", agents=AGENTS):
        assert rec.started_at is not None and rec.ended_at is not None
        assert rec.talk_seconds <= rec.duration_seconds
        assert rec.wait_seconds <= rec.duration_seconds


# -- tailing -----------------------------------------------------------------------------------

def append(path: Path, data: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:  # as cdr_csv does: open, append, close
        fh.write(data)


def test_tail_returns_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    with CdrTail(path) as tail:
        assert tail.read() == []  # no file yet
        append(path, "a\nb\nc-part")
        assert tail.read() == [(1, "a"), (2, "b")]
        assert tail.read() == []
        append(path, "ial\r\n")
        assert tail.read() == [(3, "c-partial")]
        inode = os.stat(path).st_ino
        assert tail.position == (inode, len("a\nb\nc-partial\r\n"), 3)


def test_tail_finishes_a_rotated_file_then_reads_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    append(path, "1\n")
    with CdrTail(path) as tail:
        assert tail.read() == [(1, "1")]
        append(path, "2\n")  # written after our last read ...
        path.rename(tmp_path / "Master.csv.1")  # ... then logrotate moves the file
        append(path, "new-1\n")  # and cdr_csv creates a fresh one
        assert tail.read() == [(2, "2"), (1, "new-1")]
        assert tail.rotations == 1
        append(path, "new-2\n")
        assert tail.read() == [(2, "new-2")]


def test_tail_rereads_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    append(path, "old-1\nold-2\n")
    with CdrTail(path) as tail:
        assert len(tail.read()) == 2
        path.write_text("n\n")  # copytruncate: same inode, shorter
        assert tail.read() == [(1, "n")]
        assert tail.rotations == 1


def test_tail_resumes_from_a_saved_position(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    append(path, "1\n2\n")
    with CdrTail(path) as tail:
        tail.read()
        saved = tail.position
    append(path, "3\n")
    with CdrTail(path, position=saved) as again:
        assert again.read() == [(3, "3")]
    path.unlink()
    append(path, "x\n")  # a different file (new inode) under the same name
    with CdrTail(path, position=saved) as stale:
        assert stale.read() == [(1, "x")]


def test_tail_lines_feed_the_parser(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    append(path, MASTER.read_text())
    with CdrTail(path) as tail:
        parsed = parse_lines(tail.read(), source=str(path))
    assert parsed.problems == () and len(parsed.rows) == 41
    assert [r.line for r in parsed.rows] == list(range(1, 42))
    # recorded in lab runs a day apart
    assert max(r.end for r in parsed.rows) - min(r.start for r in parsed.rows) < timedelta(days=2)


def test_userfield_tags_use_the_hooks_keys() -> None:
    # The same grammar as AGI(aftercall-attach,name=vip,Tag=x): case-blind tag keys.
    tags, _ = parse_userfield("name=vip;TICKET=12;Tag=x")
    assert tags == ("vip", "x")
