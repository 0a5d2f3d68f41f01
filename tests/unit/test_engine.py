"""The rule engine: each matcher, first match per recipient, continue, recipients, decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agent.models import (
    CallRecord,
    Direction,
    Disposition,
    HangupBy,
    RecipientKind,
    SuppressReason,
    Trigger,
)
from agent.rules.engine import agent_extension, decide, explain
from agent.rules.loader import RuleSet, load_rules_text

HEAD = """\
version: 1
defaults:
  region: IN
  timezone: Asia/Kolkata
  sender_id: ACMECO
  gateway: smsc
  quiet_hours: {from: "21:00", to: "09:00", action: defer}
  max_age: 15m
  public_base_url: https://acme.in
  dlt_entity_id: "1101456789012345678"
agents:
  "2001": {name: Priya, mobile: "+919812345678"}
  "2002": {name: Arjun}
gateways:
  smsc: {type: smpp, host: 127.0.0.1, system_id: aftercall}
  alt: {type: smpp, host: 127.0.0.2, system_id: aftercall}
templates:
  hi: {text: "Hi {{ caller_name | default('there') }}", dlt_template_id: "1107161234567890123"}
  ticket: {text: "Ticket {{ vars.TICKET }}: {{ link('https://t.in/' ~ vars.TICKET) }}"}
  agent: {text: "{{ caller }} in {{ queue | default('-') }} for {{ agent_name }}"}
"""
# 10:00 IST on Thursday 14 Aug 2025
STARTED = datetime(2025, 8, 14, 4, 30, tzinfo=UTC)
CALLER = "+919876500001"


def load(rules: str) -> RuleSet:
    return load_rules_text(HEAD + "rules:\n" + rules, "r.yaml", {})


def call(**kw: Any) -> CallRecord:
    base: dict[str, Any] = {
        "call_id": "1723609800.1",
        "caller": CALLER,
        "did": "18005550100",
        "queue": "Support",
        "agent": "PJSIP/2001-0000000a",
        "disposition": Disposition.ANSWERED,
        "direction": Direction.INBOUND,
        "started_at": STARTED,
        "ended_at": STARTED,
        "talk_seconds": 90.0,
        "wait_seconds": 20.0,
        "hangup_by": HangupBy.CALLER,
        "tags": ("Support",),
        "vars": {"TICKET": "48213"},
    }
    base.update(kw)
    return CallRecord(**base)


def reason(match: str, record: CallRecord) -> str | None:
    rs = load(f"  - {{name: r, match: {match}, send: {{template: hi}}}}\n")
    (trace,) = explain(rs, record, now=STARTED)
    assert trace.matched == (trace.reason is None)
    return trace.reason


MATCHERS: list[tuple[str, dict[str, Any], str | None]] = [
    ("{queue: [Support]}", {}, None),
    ("{queue: [Support]}", {"queue": "Sales"}, "queue is 'Sales', rule wants one of ['Support']"),
    ("{queue: Support}", {"queue": None}, "queue is not set, rule wants one of ['Support']"),
    ("{did: ['+1 800 555 0100']}", {}, None),  # compared as digits
    ("{did: ['18005550200']}", {}, "did is '18005550100', rule wants one of ['18005550200']"),
    ("{agent: ['2001']}", {}, None),  # extension of PJSIP/2001-0000000a
    ("{agent: ['2002']}", {}, "agent is 'PJSIP/2001-0000000a', rule wants one of ['2002']"),
    ("{tags: [billing, support]}", {}, None),  # any of, case-insensitive
    ("{tags: appointment}", {}, "tags are ['Support'], rule wants any of ['appointment']"),
    ("{direction: inbound}", {}, None),
    ("{direction: [outbound]}", {}, "direction is 'inbound', rule wants one of ['outbound']"),
    ("{disposition: [missed, abandoned]}", {"disposition": Disposition.ABANDONED}, None),
    ("{disposition: [missed]}", {}, "disposition is 'answered', rule wants one of ['missed']"),
    ("{hangup_by: [agent]}", {}, "hangup_by is 'caller', rule wants one of ['agent']"),
    (
        "{hangup_by: [agent]}",
        {"hangup_by": None},
        ("hangup_by is not set, rule wants one of ['agent']"),
    ),
    ("{min_talk: 60s}", {}, None),
    ("{min_talk: 2m}", {}, "talk time 90s is under min_talk 120s"),
    ("{max_talk: 1m}", {}, "talk time 90s is over max_talk 60s"),
    ("{min_wait: 30s}", {}, "wait time 20s is under min_wait 30s"),
    ("{max_wait: 10s}", {}, "wait time 20s is over max_wait 10s"),
    ("{caller_type: [mobile]}", {}, None),
    (
        "{caller_type: [mobile]}",
        {"caller": "01123456789"},
        "caller type is landline, rule wants one of ['mobile']",
    ),
    ("{caller_type: [anonymous]}", {"caller": "anonymous"}, None),
    (
        "{caller_type: [mobile]}",
        {"caller": "+14155552671"},
        "caller type is international, rule wants one of ['mobile']",
    ),
    (
        "{caller_type: [mobile]}",
        {"caller": "56767"},
        "caller type is short_code, rule wants one of ['mobile']",
    ),
    ("{time: {from: '09:00', to: '18:00'}}", {}, None),
    (
        "{time: {from: '18:00', to: '09:00'}}",
        {},
        "call time 10:00 (Asia/Kolkata) is outside 18:00-09:00",
    ),
    ("{days: mon-fri}", {}, None),  # a Thursday
    ("{days: [sat, sun]}", {}, "call day thu (Asia/Kolkata) is not one of ['sat', 'sun']"),
    ("{vars: {TICKET: present}}", {}, None),
    (
        "{vars: {TICKET: present}}",
        {"vars": {"TICKET": ""}},
        "vars.TICKET is missing, rule wants present",
    ),
    ("{vars: {TICKET: absent}}", {}, "vars.TICKET is set, rule wants absent"),
    ("{vars: {TICKET: '48213'}}", {}, None),
    ("{vars: {TICKET: ['1', '2']}}", {}, "vars.TICKET is '48213', rule wants one of ['1', '2']"),
    ("{vars: {TICKET: {regex: '^[0-9]{5}$'}}}", {}, None),
    ("{vars: {TICKET: {regex: '^T-'}}}", {}, "vars.TICKET is '48213', rule wants matching /^T-/"),
    ("{vars: {LANG: {equals: present}}}", {"vars": {"LANG": "present"}}, None),
]


@pytest.mark.parametrize(("match", "changes", "expected"), MATCHERS)
def test_matchers(match: str, changes: dict[str, Any], expected: str | None) -> None:
    assert reason(match, call(**changes)) == expected


def test_trigger() -> None:
    rs = load("  - {name: c, on: call_connected, send: {to: agent, template: agent}}\n")
    (trace,) = explain(rs, call(), now=STARTED)
    assert trace.reason == "trigger is call_completed, rule is on call_connected"
    (d,) = decide(rs, call(trigger=Trigger.CALL_CONNECTED), now=STARTED)
    assert d.trigger is Trigger.CALL_CONNECTED and d.recipient is RecipientKind.AGENT


@pytest.mark.parametrize(
    ("local", "days", "matched"),
    [
        # window 22:00-06:00 on Fridays: Saturday 02:00 belongs to Friday night
        (datetime(2025, 8, 15, 23, 0), "[fri]", True),
        (datetime(2025, 8, 16, 2, 0), "[fri]", True),
        (datetime(2025, 8, 16, 2, 0), "[sat]", False),
        (datetime(2025, 8, 16, 7, 0), "[sat]", False),  # outside the window
        (datetime(2025, 8, 16, 22, 30), "[sat]", True),
    ],
)
def test_window_across_midnight(local: datetime, days: str, matched: bool) -> None:
    from zoneinfo import ZoneInfo

    started = local.replace(tzinfo=ZoneInfo("Asia/Kolkata"))
    got = reason(
        f"{{time: {{from: '22:00', to: '06:00'}}, days: {days}}}", call(started_at=started)
    )
    assert (got is None) == matched, got


def test_first_match_per_recipient_wins() -> None:
    rs = load(
        "  - {name: a, send: {template: hi}}\n"
        "  - {name: b, send: {template: hi}}\n"
        "  - {name: c, send: {to: agent, template: agent}}\n"
    )
    traces = explain(rs, call(), now=STARTED)
    assert [(t.rule, len(t.decisions)) for t in traces] == [("a", 1), ("b", 0), ("c", 1)]
    assert traces[1].matched and traces[1].skipped == ("caller: already taken by rule 'a'",)
    assert [(d.rule, d.recipient) for d in decide(rs, call(), now=STARTED)] == [
        ("a", RecipientKind.CALLER),
        ("c", RecipientKind.AGENT),
    ]


def test_continue_lets_later_rules_text_the_same_recipient() -> None:
    rs = load(
        "  - {name: a, send: {template: hi}, continue: true}\n"
        "  - {name: b, send: {to: both, template: hi}}\n"
        "  - {name: c, send: {to: both, template: hi}}\n"
    )
    got = [(d.rule, d.recipient.value) for d in decide(rs, call(), now=STARTED)]
    assert got == [("a", "caller"), ("b", "caller"), ("b", "agent")]


def test_a_non_matching_rule_takes_nobody() -> None:
    rs = load(
        "  - {name: a, match: {queue: Sales}, send: {template: hi}}\n"
        "  - {name: b, send: {template: hi}}\n"
    )
    assert [d.rule for d in decide(rs, call(), now=STARTED)] == ["b"]


def test_disabled_rule_never_fires_nor_takes_recipients() -> None:
    rs = load(
        "  - {name: a, enabled: false, send: {template: hi}}\n  - {name: b, send: {template: hi}}\n"
    )
    traces = explain(rs, call(), now=STARTED)
    assert traces[0].reason == "rule is disabled (enabled: false)"
    assert [d.rule for d in decide(rs, call(), now=STARTED)] == ["b"]


def test_decision_carries_every_setting() -> None:
    rs = load(
        "  - name: a\n    send: {template: ticket, gateway: alt, sender_id: ACMEHQ}\n"
        "    cooldown: 24h\n    max_age: 5m\n    quiet_hours: {action: drop}\n"
    )
    (d,) = decide(rs, call(), now=STARTED, link=lambda url: f"<{url}>")
    assert d.call_id == "1723609800.1" and d.rule == "a" and d.template == "ticket"
    assert d.number == CALLER and d.recipient is RecipientKind.CALLER
    assert (d.gateway, d.sender_id) == ("alt", "ACMEHQ")
    assert d.text == "Ticket 48213: <https://t.in/48213>"
    assert (d.encoding, d.segments, d.category) == ("GSM-7", 1, "transactional")
    assert d.dlt_template_id is None and d.dlt_entity_id == "1101456789012345678"
    assert d.cooldown_seconds == 86400 and d.max_age_seconds == 300
    assert d.quiet_hours == ("21:00", "09:00", "drop") and d.timezone == "Asia/Kolkata"
    assert d.suppress is None and d.detail is None and d.call_ended_at == STARTED
    assert d.idempotency_key == f"1723609800.1|a|caller|{CALLER}"
    (on_blr,) = decide(rs, call(pbx="blr"), now=STARTED, link=lambda url: f"<{url}>")
    assert on_blr.pbx == "blr" and on_blr.idempotency_key == f"blr|1723609800.1|a|caller|{CALLER}"


def test_defaults_apply_when_the_rule_says_nothing() -> None:
    (d,) = decide(load("  - {name: a, send: {template: hi}}\n"), call(), now=STARTED)
    assert (d.gateway, d.sender_id, d.max_age_seconds) == ("smsc", "ACMECO", 900)
    assert d.quiet_hours == ("21:00", "09:00", "defer") and d.cooldown_seconds is None
    assert d.dlt_template_id == "1107161234567890123"


def test_default_link_is_a_placeholder_of_the_reserved_length() -> None:
    (d,) = decide(load("  - {name: a, send: {template: ticket}}\n"), call(), now=STARTED)
    assert d.text == "Ticket 48213: https://acme.in/l/xxxxxxxxxx"


@pytest.mark.parametrize(
    ("caller", "detail"),
    [
        ("anonymous", "caller: caller id withheld"),
        ("56767", "caller: 5-digit short code"),
        ("VM-ACME", "caller: not a phone number"),
    ],
)
def test_unusable_caller_is_suppressed_as_invalid_number(caller: str, detail: str) -> None:
    (d,) = decide(load("  - {name: a, send: {template: hi}}\n"), call(caller=caller), now=STARTED)
    assert d.number is None and d.suppress is SuppressReason.INVALID_NUMBER
    assert d.detail == detail and d.text == "Hi there"


def test_national_caller_number_becomes_e164() -> None:
    (d,) = decide(
        load("  - {name: a, send: {template: hi}}\n"), call(caller="09876500001"), now=STARTED
    )
    assert d.number == CALLER


def test_template_error_is_suppressed_with_the_reason() -> None:
    (d,) = decide(load("  - {name: a, send: {template: ticket}}\n"), call(vars={}), now=STARTED)
    assert d.suppress is SuppressReason.TEMPLATE_ERROR and d.text is None
    assert d.detail == "template: vars.TICKET is missing for this call"
    assert d.number == CALLER


def test_agent_recipient_comes_from_the_directory() -> None:
    rs = load("  - {name: a, send: {to: agent, template: agent}}\n")
    (d,) = decide(rs, call(), now=STARTED)
    assert d.number == "+919812345678" and d.text == f"{CALLER} in Support for Priya"
    # the record's own agent_number wins over the directory
    (d,) = decide(rs, call(agent_number="+919800000001", agent_name="P."), now=STARTED)
    assert d.number == "+919800000001" and d.text.endswith("for P.")  # type: ignore[union-attr]


def test_agent_without_a_mobile_is_suppressed() -> None:
    rs = load("  - {name: a, send: {to: agent, template: hi}}\n")
    (d,) = decide(rs, call(agent="PJSIP/2002"), now=STARTED)
    assert d.suppress is SuppressReason.INVALID_NUMBER
    assert d.detail == "agent PJSIP/2002 has no mobile (record or agents directory)"
    (d,) = decide(rs, call(agent=None), now=STARTED)
    assert d.detail == "the call has no mobile (record or agents directory)"


def test_fixed_numbers_and_both() -> None:
    rs = load("  - {name: a, send: {to: [both, '09812300000', both], template: hi}}\n")
    got = [(d.recipient.value, d.number) for d in decide(rs, call(), now=STARTED)]
    assert got == [("caller", CALLER), ("agent", "+919812345678"), ("fixed", "+919812300000")]


@pytest.mark.parametrize(
    ("agent", "ext"),
    [
        ("PJSIP/2001-0000000a", "2001"),
        ("Local/2001@from-queue-0000001;1", "2001"),
        ("2001", "2001"),
        ("SIP/2001", "2001"),
        (None, None),
        ("", None),
    ],
)
def test_agent_extension(agent: str | None, ext: str | None) -> None:
    assert agent_extension(agent) == ext


# A dialplan variable the template trusts, in Devanagari: it turns a 1-segment GSM-7 text
# into 2 UCS-2 segments. The rule's over_segments says what happens (problem: it used to be
# sent as 2 segments without a word).
NOTE = "आपकी शिकायत दर्ज कर ली गई है, धन्यवाद"


def _over(over: str | None) -> tuple[Any, ...]:
    text = HEAD.replace(
        "templates:\n",
        "templates:\n  note: {text: \"Hello from Acme support. Your note: {{ vars.NOTE }}. "
        "We will call you back today.\", max_segments: 1}\n",
    ) + "rules:\n  - {name: n, send: {template: note}" + (f", over_segments: {over}" if over else "") + "}\n"
    rs = load_rules_text(text, "r.yaml", {})
    return decide(rs, call(vars={"NOTE": NOTE}), now=STARTED)


def test_over_segments_default_suppresses_as_too_long() -> None:
    (d,) = _over(None)
    assert d.suppress is SuppressReason.TOO_LONG and d.text is None
    assert "exceed max_segments 1" in (d.detail or "")


def test_over_segments_send_sends_the_longer_text() -> None:
    (d,) = _over("send")
    assert d.suppress is None and NOTE in (d.text or "")
    assert (d.encoding, d.segments) == ("UCS-2", 2)


def test_over_segments_truncate_cuts_to_fit() -> None:
    (d,) = _over("truncate")
    assert d.suppress is None and d.text is not None and d.text.endswith("\u2026")
    assert (d.encoding, d.segments) == ("UCS-2", 1)
    assert d.text.startswith("Hello from Acme support. Your note: ")
