"""rules.yaml loading: strict schema, every error located at file:line:column, all at once."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from agent.errors import RulesError
from agent.rules.loader import RuleSet, load_rules, load_rules_text
from agent.rules.schema import HttpGateway, SmppGateway

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rules"
REPO_RULES = Path(__file__).parent.parent.parent / "rules.yaml"

# Ten lines every test below builds on; what a test appends starts on line 11.
HEAD = """\
version: 1
defaults:
  region: IN
  timezone: Asia/Kolkata
  sender_id: ACMECO
  gateway: smsc
gateways:
  smsc: {type: smpp, host: 127.0.0.1, system_id: aftercall}
templates:
  hello: {text: "Hello {{ caller_name | default('there') }}"}
"""
RULE = "rules:\n  - {name: r1, send: {template: hello}}\n"


def load(text: str, env: dict[str, str] | None = None) -> RuleSet:
    return load_rules_text(text, "r.yaml", env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(RulesError) as info:
        load(text, env)
    return [str(p) for p in info.value.problems]


def test_minimal_file_loads() -> None:
    rs = load(HEAD + RULE)
    assert rs.rules[0].name == "r1"
    assert rs.rules[0].on == "call_completed"
    assert rs.rules[0].send.to == ("caller",)
    assert set(rs.templates) == {"hello"}


def test_repository_rules_yaml_is_valid() -> None:
    rs = load_rules(REPO_RULES, env={})
    assert [r.name for r in rs.rules][:2] == ["appointment-confirmation", "support-followup"]
    assert rs.config.gateways["smsc"].password.get_secret_value() == "secret"  # type: ignore[union-attr]


def test_fixture_valid_file_loads() -> None:
    from agent.commands.check import check

    load_rules(FIXTURES / "valid.yaml", env={})
    assert check(FIXTURES / "valid.yaml")[1] == 0


def test_scalars_are_text_unless_a_field_wants_otherwise() -> None:
    # YAML 1.1 would read `on` as True, 21:00 as 1260, the mobile as an int without "+"
    rs = load(
        (
            HEAD
            + """\
agents:
  2001: {name: Priya, mobile: +919812345678}
  "2002": {name: Arjun, mobile: 09876543210}
rules:
  - name: r1
    on: call_connected
    enabled: no
    continue: yes
    send: {to: agent, template: hello}
"""
        ).replace("defaults:\n", "defaults:\n  quiet_hours: {from: 21:00, to: 09:00}\n")
    )
    assert rs.config.agents["2001"].mobile == "+919812345678"
    assert rs.config.agents["2002"].mobile == "+919876543210"  # normalised to E.164
    rule = rs.rules[0]
    assert (rule.on, rule.enabled, rule.continue_) == ("call_connected", False, True)
    qh = rs.defaults.quiet_hours
    assert qh is not None and (qh.from_, qh.to, qh.action) == (time(21), time(9), "defer")


def test_durations_and_rates() -> None:
    rs = load(
        HEAD.replace(
            "defaults:\n",
            "defaults:\n  max_age: 1h30m\n  rate_limits: {per_number: 3/1h, global: 100/1m}\n",
        )
        + "rules:\n  - {name: r1, send: {template: hello}, cooldown: 2d}\n"
    )
    assert rs.defaults.max_age == timedelta(hours=1, minutes=30)
    assert rs.rules[0].cooldown == timedelta(days=2)
    limits = rs.defaults.rate_limits
    assert limits.per_number is not None and limits.per_number.count == 3
    assert limits.global_ is not None and limits.global_.per == timedelta(minutes=1)


def test_fixed_numbers_are_normalised() -> None:
    rs = load(HEAD + "rules:\n  - {name: r1, send: {to: [agent, 09812345678], template: hello}}\n")
    assert rs.rules[0].send.to == ("agent", "+919812345678")


def test_yaml_merge_keys_and_anchors() -> None:
    rs = load(
        HEAD
        + """\
rules:
  - &base {name: r1, send: {template: hello}, cooldown: 1h}
  - {<<: *base, name: r2}
"""
    )
    assert [(r.name, r.cooldown) for r in rs.rules] == [
        ("r1", timedelta(hours=1)),
        ("r2", timedelta(hours=1)),
    ]


def test_env_interpolation() -> None:
    text = (
        HEAD.replace("system_id: aftercall}", "system_id: '${SMPP_USER}', password: '${PW:-dflt}'}")
        + RULE
    )
    rs = load(text, {"SMPP_USER": "acme"})
    gw = rs.config.gateways["smsc"]
    assert isinstance(gw, SmppGateway)
    assert gw.system_id == "acme" and gw.password is not None
    assert gw.password.get_secret_value() == "dflt"
    assert (
        load(text, {"SMPP_USER": "acme", "PW": "real"})
        .config.gateways["smsc"]
        .password.get_secret_value()
        == "real"
    )  # type: ignore[union-attr]


def test_dollar_dollar_is_a_literal_dollar() -> None:
    rs = load(HEAD.replace('"Hello {{', '"Pay $$5 {{') + RULE)
    assert rs.templates["hello"].source.startswith("Pay $5 ")
    # ${...} in a template's text would put an environment value (a secret?) in every SMS
    assert any("template's text" in p for p in problems(
        HEAD.replace('"Hello {{', '"Pay ${X:-now} {{') + RULE))


# --- every error names file:line:column and the key path ------------------------------------


def test_unknown_key_points_at_the_key() -> None:
    assert problems(HEAD + "rules:\n  - {name: r1, send: {template: hello}, colour: red}\n") == [
        "r.yaml:12:41: rules[0].colour: unknown key 'colour'"
    ]


def test_unknown_top_level_key() -> None:
    assert problems(HEAD + RULE + "extras: 1\n") == ["r.yaml:13:1: extras: unknown key 'extras'"]


def test_missing_required_key_points_at_its_mapping() -> None:
    assert problems(HEAD + "rules:\n  - {name: r1, send: {to: caller}}\n") == [
        "r.yaml:12:22: rules[0].send.template: missing required key 'template'"
    ]


def test_wrong_type() -> None:
    out = problems(
        HEAD.replace("default('there') }}\"}", "default('there') }}\", max_segments: lots}") + RULE
    )
    assert out == [
        (
            "r.yaml:10:77: templates.hello.max_segments: Input should be a valid "
            "integer, unable to parse string as an integer"
        )
    ]


def test_bad_duration() -> None:
    assert problems(HEAD + "rules:\n  - {name: r1, send: {template: hello}, cooldown: 5min}\n") == [
        (
            "r.yaml:12:51: rules[0].cooldown: bad duration '5min': expected e.g. 15m, 24h, "
            "60s or 1h30m"
        )
    ]


def test_bad_time() -> None:
    text = (
        HEAD.replace(
            "gateway: smsc\n", "gateway: smsc\n  quiet_hours: {from: '25:00', to: '09:00'}\n"
        )
        + RULE
    )
    assert problems(text) == [
        (
            "r.yaml:7:23: defaults.quiet_hours.from: bad time '25:00': "
            "expected HH:MM on a 24-hour clock, e.g. 09:00"
        )
    ]


def test_bad_timezone_and_region() -> None:
    text = HEAD.replace("Asia/Kolkata", "Asia/Kolkatta").replace("region: IN", "region: XX")
    assert problems(text + RULE) == [
        "r.yaml:3:11: defaults.region: unknown region 'XX': expected an ISO 3166 code such as IN",
        (
            "r.yaml:4:13: defaults.timezone: unknown timezone 'Asia/Kolkatta': expected an IANA "
            "name such as Asia/Kolkata"
        ),
    ]


def test_unknown_template_and_gateway_names() -> None:
    assert problems(HEAD + "rules:\n  - {name: r1, send: {template: bye, gateway: gw}}\n") == [
        "r.yaml:12:33: rules[0].send.template: unknown template 'bye'; defined: hello",
        "r.yaml:12:47: rules[0].send.gateway: unknown gateway 'gw'; defined: smsc",
    ]


def test_unknown_default_gateway() -> None:
    assert problems(HEAD.replace("gateway: smsc", "gateway: smpp1") + RULE) == [
        "r.yaml:6:12: defaults.gateway: unknown gateway 'smpp1'; defined: smsc"
    ]


def test_unknown_merge_tag_with_suggestion() -> None:
    text = HEAD.replace("caller_name | default('there')", "caller_nam") + RULE
    assert problems(text) == [
        (
            "r.yaml:10:17: templates.hello.text: unknown merge tag 'caller_nam': use a call record "
            "field, vars.NAME, now or link(); did you mean 'caller_name'?"
        )
    ]


def test_template_syntax_error_in_a_block_scalar_names_its_line() -> None:
    text = HEAD + "  two:\n    text: |\n      first line\n      {{ vars.X | nosuch }}\n" + RULE
    assert problems(text) == [
        "r.yaml:14:7: templates.two.text: template error: No filter named 'nosuch'."
    ]


def test_link_needs_public_base_url() -> None:
    text = HEAD + "  l: {text: \"{{ link('https://x.in') }}\"}\n" + RULE
    assert problems(text) == [
        "r.yaml:11:13: templates.l.text: link() needs defaults.public_base_url for tracked links"
    ]


def test_duplicate_rule_names() -> None:
    text = (
        HEAD + "rules:\n  - {name: r1, send: {template: hello}}\n"
        "  - {name: r1, send: {template: hello}}\n"
    )
    assert problems(text) == [
        ("r.yaml:13:12: rules[1].name: duplicate rule name 'r1' (first at line 12)")
    ]


def test_duplicate_yaml_keys() -> None:
    text = HEAD + "  hello: {text: again}\n" + RULE
    assert problems(text) == [
        ("r.yaml:11:3: templates.hello: duplicate key 'hello' (first at line 10)")
    ]


def test_template_that_cannot_fit_max_segments() -> None:
    text = HEAD + '  long: {text: "' + "{{ vars.A }}" * 14 + '"}\n' + RULE
    assert problems(text) == [
        (
            "r.yaml:11:16: templates.long.text: worst case is 168 GSM-7 "
            "units = 2 segments, over max_segments 1"
        )
    ]


def test_template_forced_into_ucs2_is_measured_in_ucs2() -> None:
    text = HEAD + "  ucs: {text: \"नमस्ते {{ caller_name | default('') }} " + "x" * 50 + '"}\n'
    out = problems(text + RULE)
    assert len(out) == 1 and out[0].startswith("r.yaml:11:15: templates.ucs.text: worst case is")
    assert "UCS-2" in out[0] and "forced by" in out[0]


def test_missing_environment_variable_names_it() -> None:
    text = (
        HEAD.replace("system_id: aftercall}", 'system_id: aftercall, password: "${SMPP_PASSWORD}"}')
        + RULE
    )
    assert problems(text) == [
        ("r.yaml:8:71: gateways.smsc.password: environment variable SMPP_PASSWORD is not set")
    ]


def test_bad_reference_syntax() -> None:
    text = HEAD.replace("system_id: aftercall}", "system_id: '${1BAD}'}") + RULE
    assert problems(text) == [
        (
            "r.yaml:8:50: gateways.smsc.system_id: bad reference ${1BAD}: "
            "expected ${NAME} or ${NAME:-default}"
        )
    ]


def test_yaml_syntax_error() -> None:
    out = problems(HEAD + "rules:\n  - {name: r1, send: {template: hello}\n")
    assert len(out) == 1 and out[0].startswith("r.yaml:13:1: YAML syntax:")


def test_bad_regex_in_vars() -> None:
    text = (
        HEAD + "rules:\n  - name: r1\n    match: {vars: {T: {regex: '([0-9'}}}\n"
        "    send: {template: hello}\n"
    )
    out = problems(text)
    assert len(out) == 1
    assert out[0].startswith("r.yaml:13:31: rules[0].match.vars.T.regex: bad regular expression")


def test_bad_agent_mobile_and_fixed_recipient() -> None:
    text = (
        HEAD + "agents:\n  '2001': {name: P, mobile: '12'}\n"
        "rules:\n  - {name: r1, send: {to: [caller, hello], template: hello}}\n"
    )
    assert problems(text) == [
        (
            "r.yaml:12:29: agents.2001.mobile: not a usable mobile number (not a valid number in "
            "its numbering plan)"
        ),
        (
            "r.yaml:14:36: rules[0].send.to[1]: 'hello' is neither caller, agent, both nor a usable "
            "number (not a phone number)"
        ),
    ]


def test_gateway_type_errors() -> None:
    text = (
        HEAD.replace(
            "  smsc: {type: smpp, host: 127.0.0.1, system_id: aftercall}\n",
            "  smsc: {type: smpp, host: 127.0.0.1, system_id: aftercall, port: 99999}\n"
            "  h: {type: http, preset: twilio, account_sid: AC1, backup: nope}\n"
            "  x: {type: carrier}\n"
            "  y: {host: a}\n",
        )
        + RULE
    )
    assert problems(text) == [
        "r.yaml:8:67: gateways.smsc.port: Input should be less than or equal to 65535",
        "r.yaml:9:6: gateways.h: preset twilio needs auth_token",
        "r.yaml:9:61: gateways.h.backup: backup gateway 'nope' is not defined in gateways",
        (
            "r.yaml:10:13: gateways.x.type: Input tag 'carrier' found using 'type' does not match "
            "any of the expected tags: 'smpp', 'http'"
        ),
        "r.yaml:11:6: gateways.y: missing required key 'type' (smpp or http)",
    ]


def test_reply_keyword_errors() -> None:
    text = (
        HEAD + RULE + "replies:\n  keywords: {STOP: opt_out, stop: opt_in, "
        "C: {tag: t, reply: nope}, D: unsub}\n"
    )
    assert problems(text) == [
        (
            "r.yaml:14:29: replies.keywords.stop: keyword 'stop' repeats 'STOP' (keywords ignore "
            "case)"
        ),
        "r.yaml:14:62: replies.keywords.C.reply: unknown template 'nope'; defined: hello",
        "r.yaml:14:72: replies.keywords.D: expected opt_out, opt_in, help or {tag, reply}, not "
        "'unsub'",
    ]


def test_unsupported_version() -> None:
    assert problems(HEAD.replace("version: 1", "version: 2") + RULE) == [
        "r.yaml:1:10: version: unsupported version 2: this aftercall reads version 1"
    ]


def test_empty_and_non_mapping_files() -> None:
    assert problems("") == ["r.yaml: the file is empty"]
    assert problems("- a\n- b\n") == [
        "r.yaml:1:1: the top level must be a mapping (version, defaults, templates, rules, ...)"
    ]


def test_all_problems_are_reported_at_once() -> None:
    out = problems((FIXTURES / "five_mistakes.yaml").read_text())
    assert len(out) == 5
    assert all(line.startswith("r.yaml:") for line in out)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "missing.yaml")
    assert "cannot read" in str(info.value)


# --- secrets ----------------------------------------------------------------------------------


SECRET = "s3cr3t-Value"


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    gateways = (
        "  h: {type: http, preset: twilio, account_sid: AC1, auth_token: '${TOKEN}', "
        "webhook_secret: '${TOKEN}', password: '${TOKEN}', url: 42}\n"
        "  k: {type: http, preset: kannel, url: 'http://x', username: u, password: '${TOKEN}', "
        "timeout: '${TOKEN}'}\n"
    )
    text = HEAD.replace("gateways:\n", "gateways:\n" + gateways) + RULE
    with pytest.raises(RulesError) as info:
        load(text, {"TOKEN": SECRET})
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    ok = (
        HEAD.replace(
            "gateways:\n",
            "gateways:\n"
            + gateways.replace("password: '${TOKEN}', url: 42", "url: 'http://x'").replace(
                "timeout: '${TOKEN}'", "timeout: 5s"
            ),
        )
        + RULE
    )
    rs = load(ok, {"TOKEN": SECRET})
    gw = rs.config.gateways["h"]
    assert isinstance(gw, HttpGateway)
    assert gw.auth_token is not None and gw.auth_token.get_secret_value() == SECRET
    for shown in (repr(rs), str(rs.config), repr(rs.config.gateways), rs.config.model_dump_json()):
        assert SECRET not in shown


def test_dnd_transactional_exception_is_opt_in() -> None:
    """defaults.dnd.transactional: suppress (the default) or send; the policy sees it."""
    assert not load(HEAD + RULE).defaults.limits().transactional_bypasses_dnd
    head = HEAD.replace("  gateway: smsc\n", "  gateway: smsc\n  dnd: {transactional: send}\n")
    assert load(head + RULE).defaults.limits().transactional_bypasses_dnd
    head = HEAD.replace("  gateway: smsc\n", "  gateway: smsc\n  dnd: {transactional: allow}\n")
    [problem] = problems(head + RULE)
    assert problem.startswith("r.yaml:7:") and "defaults.dnd.transactional" in problem, problem
    head = HEAD.replace("  gateway: smsc\n", "  gateway: smsc\n  dnd: {service: send}\n")
    assert "defaults.dnd.service" in problems(head + RULE)[0]


def test_replies_help_names_a_template() -> None:
    rs = load(HEAD + RULE + "replies: {help: hello, keywords: {AIUTO: help}}\n")
    assert rs.config.replies.help == "hello"
    assert rs.config.replies.keywords["AIUTO"].action == "help"
    [problem] = problems(HEAD + RULE + "replies: {help: nope}\n")
    assert problem.startswith("r.yaml:13:") and "replies.help: unknown template 'nope'" in problem


def test_a_one_letter_secret_is_starred_as_a_token_not_in_every_word() -> None:
    """A secret of a few characters is starred where it stands on its own, and the rest of the
    message stays readable: starring every "e" made "expected" read "***xp***ct***d"."""
    gateway = ("  k: {type: http, preset: kannel, url: 'http://x', username: u, "
               "password: '${TOKEN}', timeout: '${TOKEN}'}\n")
    with pytest.raises(RulesError) as info:
        load(HEAD.replace("gateways:\n", "gateways:\n" + gateway) + RULE, {"TOKEN": "e"})
    shown = str(info.value)
    assert "gateways.k.timeout: bad duration '***': expected" in shown, shown
    assert "'e'" not in shown and " e " not in shown
