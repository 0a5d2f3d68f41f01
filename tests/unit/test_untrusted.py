"""Hostile caller data through a recorded lab transcript: the caller can't write the company's SMS
(issue #19, finding 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.ami.replay import replay
from agent.models import CallRecord, Trigger
from agent.rules.engine import decide
from agent.rules.loader import load_rules_text
from agent.rules.templates import render_call
from agent.sms.encoding import analyze
from agent.sms.untrusted import clean, strip_invisible

AMI = Path(__file__).resolve().parents[1] / "fixtures/ami"
HOSTILE = (AMI / "hostile" / "caller_name.txt").read_bytes()
RECORDED = b"Visit http://evil.example now \x1b[2J\x07\xe2\x80\xaeKCOL"  # what the fixture holds

RULES = """\
version: 1
defaults: {region: IN, timezone: Asia/Kolkata, sender_id: ACMECO, gateway: smsc}
agents:
  "2001": {name: Priya, mobile: "+919812345678"}
templates:
  thanks:
    text: "Hi {{ caller_name | default('there') }}, thanks for calling ACME. Your call matters to us and we will follow up within one working day. -ACME"
    max_segments: 1
  summary: {text: "Call from {{ caller }} ({{ caller_name | default('no name') }})"}
  raw: {text: "{{ caller_name | trusted }}", max_segments: 4}
rules:
  - {name: thanks, match: {disposition: [answered]}, send: {to: caller, template: thanks}}
  - {name: summary, on: call_connected, send: {to: agent, template: summary}}
gateways:
  smsc: {type: smpp, host: 127.0.0.1, system_id: x}
"""
RULESET = load_rules_text(RULES, "rules.yaml")

LOCKED = ("your account is LOCKED. Unusual sign-in detected, verify now at "
          "https://acme-secure.example/login or it will be closed today")
NAMES = {
    "url": b"Visit http://evil.example now",
    "locked": LOCKED.encode(),
    "bare domain": b"Ravi see acme-help.com",
    "email": b"Write to help@evil.example",
    "phone": b"Call 07012345678 now",
    "controls": b"\x1b[31m\x07Ravi\x1b]0;pwned\x07 Kumar",
    "bidi": "\u202eRavi\u2066 Kumar\u200b".encode(),
    "long": b"A" * 500,
    "ucs2": ("\u0930\u0935\u093f" * 170).encode(),
}


def _texts(name: bytes, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "call.txt"
    path.write_bytes(HOSTILE.replace(RECORDED, name))
    out = {}
    for record in replay(path, region="IN", agents={"2001": ("Priya", "+919812345678")}):
        when = record.ended_at if record.trigger is Trigger.CALL_COMPLETED else record.answered_at
        for d in decide(RULESET, record, now=when):
            assert d.suppress is None, d.detail
            assert d.text is not None
            out[d.rule] = d.text
    return out


def test_fixture_holds_the_hostile_name() -> None:
    assert HOSTILE.count(b"CallerIDName: " + RECORDED) >= 1


@pytest.mark.parametrize("case", list(NAMES))
def test_hostile_caller_name_never_reaches_the_text(case: str, tmp_path: Path) -> None:
    texts = _texts(NAMES[case], tmp_path)
    assert set(texts) == {"thanks", "summary"}
    for text in texts.values():
        assert strip_invisible(text) == text  # no control, format or bidi character
        assert "http" not in text and ".example" not in text and "@" not in text
        assert ".com" not in text and "0701234" not in text
        assert "LOCKED" not in text
    thanks = texts["thanks"]
    info = analyze(thanks)
    assert info.segments == 1, (info, thanks)  # max_segments holds, whatever the caller sent
    name = thanks.removeprefix("Hi ").split(",", 1)[0]
    assert len(name) <= 20
    if case in ("url", "locked", "bare domain", "email", "phone"):
        assert name == "there"  # refused: the template's default applies
    if case in ("controls", "bidi"):
        assert name == "Ravi Kumar"
    if case == "ucs2":
        assert name == "there" and info.encoding == "GSM-7"  # it would have made 3 UCS-2 parts


def test_the_recorded_fixture_name_is_refused(tmp_path: Path) -> None:
    texts = _texts(RECORDED, tmp_path)
    assert texts["thanks"].startswith("Hi there, thanks")
    assert texts["summary"] == "Call from +919876543211 (no name)"


def test_trusted_opts_out_of_refusal_but_not_of_invisible_characters() -> None:
    rec = CallRecord(call_id="c", caller="+919876543211", caller_name="\x07Visit http://x.example")
    text = render_call(RULESET.templates["raw"], rec, timezone="UTC", now=datetime.now(UTC),
                       link=None, max_segments=4)
    assert text == "Visit http://x.example"


def test_clean_cuts_to_the_budget_and_keeps_ordinary_names() -> None:
    for ok in ("Ravi Kumar", "St. John", "José Ñúñez", "O'Brien-Smith", "Priya 2"):
        assert clean(ok, max_length=20, name=True).value == ok
    assert clean("B" * 300, max_length=20).value == "B" * 20
    assert clean("\x00\x1b", max_length=20).value is None


def test_check_worst_case_uses_the_budget() -> None:
    rs = load_rules_text(RULES.replace("defaults: {", "defaults: {untrusted: {max_length: 40}, "),
                         "rules.yaml")
    assert rs.templates["summary"].worst.info.units - RULESET.templates["summary"].worst.info.units \
        == 2 * 20
