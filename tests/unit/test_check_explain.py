"""`aftercall check` and `aftercall explain`: text and exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from agent.models import CallRecord, Direction, Disposition
from agent.commands.check import check
from agent.commands.explain import explain

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rules"
REPO_RULES = Path(__file__).parent.parent.parent / "rules.yaml"


def test_check_five_mistakes_prints_five_located_errors() -> None:
    path = FIXTURES / "five_mistakes.yaml"
    text, code = check(path)
    assert code == 1
    lines = text.splitlines()
    assert lines[-1] == "5 problems found"
    errors = lines[:-1]
    assert len(errors) == 5
    for line in errors:
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: \S+: .+", line), line
    assert [e.split(": ", 2)[0].rsplit(":", 2)[1:] + [e.split(": ", 2)[1]] for e in errors] == [
        ["7", "12", "defaults.max_age"],
        ["9", "18", "templates.thanks.text"],
        ["10", "17", "templates.promo.text"],
        ["15", "36", "rules[0].match.colour"],
        ["16", "34", "rules[0].send.template"],
    ]


def test_check_repository_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMPP_PASSWORD", "hunter2")
    text, code = check(REPO_RULES)
    assert code == 0, text
    assert "valid: 6 rules, 11 templates, 2 gateways, 2 agents" in text
    assert re.search(r"support_ticket +service +GSM-7 +\d+/160 units +1 segment \(max 1\)", text)
    assert "suppressed when missing: vars.TICKET" in text
    # The worst case of a caller with a Devanagari name (or a variable with one in it).
    assert re.search(r"support_ticket .*\n +with a non-GSM character in every name and "
                     r"variable: UCS-2 \d+/134 units 2 segments \(over max", text)
    assert "disabled rules: support-feedback" in text
    assert "hunter2" not in text


def test_check_reports_ucs2_promotional_wording_and_unguarded_vars(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("""\
version: 1
defaults: {region: IN, timezone: Asia/Kolkata, sender_id: ACMECO, gateway: smsc, dlt_entity_id: 1101456789012345678}
gateways: {smsc: {type: smpp, host: 127.0.0.1, system_id: a}}
templates:
  promo: {text: "Thanks! Get 20% off with coupon {{ vars.CODE }} \u2019", max_segments: 2, dlt_template_id: 1107161234567890123}
rules:
  - {name: r, on: call_connected, match: {min_talk: 10s}, send: {template: promo}}
""")
    text, code = check(path)
    assert code == 0, text
    assert re.search(r"promo +transactional UCS-2 +\d+/70 units +1 segment \(max 2\)", text)
    assert "UCS-2 forced by: '\u2019' U+2019" in text
    assert (
        f"{path}:5:17: templates.promo.text: transactional template reads as promotional "
        "('20% off', 'coupon')" in text
    )
    assert f"{path}:7:76: rules[0].send.template: template 'promo' needs vars.CODE" in text
    assert f"{path}:7:42: rules[0].match: talk time is 0 when a call connects" in text


def test_check_unreadable_file(tmp_path: Path) -> None:
    text, code = check(tmp_path / "nope.yaml")
    assert code == 1 and "cannot read" in text


def write_call(tmp_path: Path, record: CallRecord) -> Path:
    path = tmp_path / "call.json"
    path.write_text(json.dumps(record.to_dict()))
    return path


def test_explain_support_call(tmp_path: Path) -> None:
    record = CallRecord(
        call_id="1723609800.1",
        caller="09812345001",
        caller_name="Ravi",
        did="18005550100",
        queue="Support",
        agent="PJSIP/2001",
        disposition=Disposition.ANSWERED,
        started_at=datetime(2025, 8, 14, 4, 30, tzinfo=UTC),
        ended_at=datetime(2025, 8, 14, 4, 32, tzinfo=UTC),
        talk_seconds=100,
        vars={"TICKET": "48213"},
    )
    text, code = explain(REPO_RULES, write_call(tmp_path, record))
    assert code == 0, text
    assert text.startswith("call 1723609800.1: call_completed, inbound, answered, queue Support")
    assert (
        "rule appointment-confirmation: no: tags are [], rule wants any of ['appointment']" in text
    )
    assert "rule support-followup: MATCHED" in text
    assert "-> caller +919812345001 via smsc from ACMECO: GSM-7, 1 segment" in text
    assert '"Hi Ravi, your ticket #48213 is logged. Track it: https://acme.in/l/xxxxxxxxxx"' in text
    assert "rule support-feedback: no: rule is disabled" in text
    assert "rule agent-summary: no: trigger is call_completed, rule is on call_connected" in text
    assert text.rstrip().endswith(
        "1 SMS to send (before opt-out, cooldown, quiet hours and rate limits), 0 suppressed"
    )


def test_explain_missed_anonymous_call(tmp_path: Path) -> None:
    record = CallRecord(
        call_id="9.9",
        caller="anonymous",
        did="18005550200",
        direction=Direction.INBOUND,
        disposition=Disposition.MISSED,
    )
    text, code = explain(REPO_RULES, write_call(tmp_path, record))
    assert code == 0
    assert (
        "rule missed-call-sorry: no: caller type is anonymous, rule wants one of ['mobile']" in text
    )
    assert "0 SMS to send" in text


def test_explain_shows_suppressed_decisions(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("""\
version: 1
defaults: {region: IN, timezone: Asia/Kolkata, sender_id: ACMECO, gateway: smsc}
gateways: {smsc: {type: smpp, host: 127.0.0.1, system_id: a}}
templates: {t: {text: "Ticket {{ vars.TICKET }}"}}
rules: [{name: r, send: {template: t}}]
""")
    record = CallRecord(call_id="1", caller="+919812345001")
    text, code = explain(rules, write_call(tmp_path, record))
    assert code == 0
    assert (
        "-> caller +919812345001: SUPPRESSED template_error: template: vars.TICKET is "
        "missing for this call" in text
    )
    assert "0 SMS to send" in text and "1 suppressed" in text


def test_explain_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"call_id": "1", "colour": "red"}')
    text, code = explain(REPO_RULES, bad)
    assert code == 1 and "unknown call record fields: colour" in text
    text, code = explain(REPO_RULES, tmp_path / "missing.json")
    assert code == 1 and "cannot read the call record" in text
    text, code = explain(FIXTURES / "five_mistakes.yaml", bad)
    assert code == 1 and "5 problems found" in text


def test_check_warns_about_a_rule_nothing_bounds(tmp_path: Path) -> None:
    base = (
        "version: 1\n"
        "defaults:\n  region: IN\n  sender_id: ACMECO\n  gateway: g\n"
        "  dlt_entity_id: 1101456789012345678\n{extra}"
        "templates: {{t: {{text: hi, dlt_template_id: 1107161234567890123}}}}\n"
        "rules:\n  - {{name: all, send: {{to: caller, template: t}}}}\n"
        "gateways: {{g: {{type: smpp, host: h, system_id: x}}}}\n"
    )
    path = tmp_path / "r.yaml"
    path.write_text(base.format(extra=""))
    assert "SMS pumping" not in check(path)[0]  # the defaults bound it
    unsafe = (
        "  allowed_countries: any\n"
        "  rate_limits: {per_number: off, global: off, daily: off}\n"
    )
    path.write_text(base.format(extra=unsafe))
    text, code = check(path)
    assert code == 0 and "rules[0].send: texts any caller type" in text, text


def test_repository_rules_show_the_safety_keys_at_their_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rules.yaml documents the safety defaults: what it writes is what a file without the
    keys gets (so the example can't drift from the code)."""
    from agent.rules.loader import load_rules
    from agent.rules.defaults import Dnd, RateLimits, Untrusted

    monkeypatch.setenv("SMPP_PASSWORD", "hunter2")
    d = load_rules(REPO_RULES).defaults
    assert d.rate_limits == RateLimits()
    assert d.untrusted == Untrusted()
    assert d.dnd == Dnd() and not d.limits().transactional_bypasses_dnd
    assert d.countries() == frozenset({d.region})  # the default: the region's own country
    text = REPO_RULES.read_text()
    for key in ("allowed_countries:", "rate_limits:", "daily:", "agents:", "untrusted:",
                "max_length:", "allowed_sources:", "dnd:", "transactional: suppress"):
        assert key in text, key


def test_check_prints_the_safety_settings_and_flags_agents_abroad(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: 1\n"
        "defaults: {region: IN, sender_id: ACMECO, gateway: g, dlt_entity_id: 1101456789012345678}\n"
        "agents: {'2001': {name: Ann, mobile: '+447400123456'}}\n"
        "templates: {t: {text: hi, dlt_template_id: 1107161234567890123}}\n"
        "rules:\n  - {name: all, match: {caller_type: [mobile]}, send: {to: agent, template: t}}\n"
        "gateways: {g: {type: smpp, host: h, system_id: x}}\n")
    text, code = check(path)
    assert code == 0
    assert "destinations: IN" in text
    assert "callers: per_number 3/1h, global 100/1m, daily 2000/1d" in text
    assert "DND numbers: promotional and service suppressed, transactional suppressed" in text
    assert "agents.2001.mobile: GB is not in allowed_countries" in text


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """`main` points structlog at this test's captured stderr: undo that afterwards."""
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("cli_logging")
def test_explain_takes_a_replay_line_or_a_call_id_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`explain` accepts what `replay`/`calls` print (one JSON line) and, for a call the agent
    handled, its id: the record comes from the store, followed by what the agent did."""
    import asyncio

    from agent.cli import main
    from agent.dispatch import Dispatcher
    from agent.rules.engine import decide
    from agent.rules.loader import load_rules
    from agent.store import make_store

    record = CallRecord(
        call_id="1723609800.7", caller="09812345001", did="18005550100", queue="Support",
        agent="PJSIP/2001", disposition=Disposition.ANSWERED, talk_seconds=100,
        started_at=datetime(2025, 8, 14, 4, 30, tzinfo=UTC),
        ended_at=datetime(2025, 8, 14, 4, 32, tzinfo=UTC), vars={"TICKET": "48213"},
    )
    text, code = explain(REPO_RULES, json.dumps(record.to_dict()))
    assert code == 0 and "rule support-followup: MATCHED" in text
    assert "from the store" not in text

    db = tmp_path / "a.db"

    async def handled() -> None:
        rules = load_rules(REPO_RULES)
        async with make_store(db) as store:
            decisions = decide(rules, record, now=record.ended_at)
            intake = Dispatcher(store, {}, clock=lambda: record.ended_at)  # type: ignore[arg-type,return-value]
            await intake.handle(decisions, record)

    asyncio.run(handled())
    capsys.readouterr()  # the store's own log lines
    assert main(["explain", record.call_id, "--db", str(db), "--rules", str(REPO_RULES)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("call 1723609800.7: call_completed, inbound, answered, queue Support")
    assert "rule support-followup: MATCHED" in out
    did = out.split("what the agent did (from the store):", 1)[1]
    assert "support-followup -> caller +91******5001" in did, did

    assert main(["explain", "no.such.call", "--db", str(db), "--rules", str(REPO_RULES)]) == 1
    assert "no.such.call: no call with this id" in capsys.readouterr().err


def test_check_refuses_what_india_dlt_would_drop(tmp_path: Path) -> None:
    """Region IN: transactional/service templates need DLT ids, headers are 6 letters (6
    digits for promotional), and a template with dlt_text must render to that registered
    text ({#var#} slots of up to 30 characters), fallbacks included."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: 1\n"
        "defaults: {region: IN, sender_id: ACME, gateway: g}\n"
        "templates:\n"
        "  a: {text: hi}\n"
        "  b: {text: hi, category: service, dlt_template_id: 1107161234567890123,"
        " dlt_entity_id: 1101456789012345678}\n"
        "  p: {text: 'Sale {{ queue }}', category: promotional}\n"
        "  ok:\n"
        "    text: Hi {{ caller_name | default('there') }}, ticket {{ vars.T }} is logged.\n"
        "    dlt_text: 'Hi {#var#},  ticket {#var#} is logged.'\n"
        "  bad:\n"
        "    text: Your ticket {{ vars.T }} is open.\n"
        "    dlt_text: Your ticket {#var#} is logged.\n"
        "  long:\n"
        "    text: Dear {{ caller_name }}{{ caller_name }}, hello.\n"
        "    dlt_text: Dear {#var#}, hello.\n"
        "rules:\n"
        "  - {name: r1, send: {template: a}}\n"
        "  - {name: r2, send: {template: b, sender_id: ACMEIN}}\n"
        "  - {name: r3, send: {template: p, sender_id: '123456'}}\n"
        "  - {name: r4, send: {template: p, sender_id: PROMOS}}\n"
        "gateways: {g: {type: smpp, host: h, system_id: x}}\n")
    text, code = check(path)
    assert code == 1, text
    p = str(path)
    ids = ("needs dlt_template_id and dlt_entity_id (here or defaults.dlt_entity_id); "
           "operators drop unregistered texts")
    assert text.splitlines() == [
        f"{p}:4:6: templates.a: region IN: a transactional template {ids}",
        f"{p}:8:5: templates.ok: region IN: a transactional template {ids}",
        f"{p}:11:5: templates.bad: region IN: a transactional template {ids}",
        f"{p}:12:15: templates.bad.dlt_text: renders as 'Your ticket VVVVVVVVVVVV is open.', "
        "which does not fit dlt_text 'Your ticket {#var#} is logged.'",
        f"{p}:14:5: templates.long: region IN: a transactional template {ids}",
        f"{p}:15:15: templates.long.dlt_text: a {{#var#}} slot would hold 40 characters "
        f"('{'W' * 40}'); DLT allows 30",
        f"{p}:2:35: defaults.sender_id: DLT header 'ACME' for transactional texts must be "
        "6 letters (rule r1, template a)",
        f"{p}:20:47: rules[3].send.sender_id: DLT header 'PROMOS' for promotional texts must "
        "be 6 digits (rule r4, template p)",
        "8 problems found",
    ], text

    # Another region: ids and headers are not DLT's business; a dlt_text still is.
    path.write_text(path.read_text().replace("region: IN", "region: US"))
    text, code = check(path)
    assert code == 1 and "templates.a" not in text and "sender_id" not in text, text
    assert text.splitlines()[-1] == "2 problems found", text


def test_repository_rules_pass_the_dlt_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.rules.dlt import problems
    from agent.rules.loader import load_rules

    monkeypatch.setenv("SMPP_PASSWORD", "hunter2")
    rs = load_rules(REPO_RULES)
    assert problems(rs) == []
    assert any(t.dlt_text for t in rs.config.templates.values())  # the example shows the key


@pytest.mark.parametrize(("sentences", "via_backup", "warned"),
                         [(25, False, True), (25, True, True), (15, False, False)])
def test_check_warns_of_texts_longer_than_jasmin_sends(
        tmp_path: Path, sentences: int, via_backup: bool, warned: bool) -> None:
    """Jasmin sends at most long_content_max_parts (5) parts of a text and drops the rest
    silently: a rule whose texts may be longer, through a Jasmin gateway or its backup, is
    said in check's warnings."""
    path = tmp_path / "r.yaml"
    primary = "smsc" if via_backup else "jas"
    path.write_text(f"""\
version: 1
defaults: {{region: US, timezone: UTC, sender_id: ACMECO, gateway: {primary}}}
gateways:
  smsc: {{type: smpp, host: 127.0.0.1, system_id: a, backup: jas}}
  jas: {{type: http, preset: jasmin, url: "http://127.0.0.1:1401/send", username: u, password: pw-secret}}
templates:
  long: {{text: "{'Thank you for calling us today. ' * sentences}", max_segments: 6}}
rules:
  - {{name: r, send: {{template: long}}}}
""")
    text, code = check(path)
    assert code == 0, text
    said = ("template 'long' may take 6 segments and goes through Jasmin gateway 'jas', "
            "which sends at most 5 parts")
    assert (said in text) is warned, text
