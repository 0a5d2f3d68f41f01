"""One model per gateway: what rules.yaml says is what `check` validates and what `run` builds.

Each HTTP preset is written as a user writes it in rules.yaml, loaded by the same loader
`aftercall check` uses, built by the same function `aftercall run` uses, and sent through the
simulator's emulation of that gateway with its receipt coming back.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_http_gateway import PASSWORD, WEBHOOK_SECRET, Env, Inbox, env  # noqa: F401

from agent.errors import RulesError
from agent.gateways.build import build_gateways
from agent.gateways.http import HttpGateway
from agent.gateways.presets.common import HttpGatewayConfig
from agent.gateways.smpp.config import SmppConfig
from agent.models import OutboundSms, ReceiptState
from agent.rules.loader import load_rules_text

HEAD = """\
version: 1
defaults: {region: IN, timezone: Asia/Kolkata, sender_id: ACMECO, gateway: gw}
templates:
  hello: {text: "Hello"}
rules:
  - {name: r1, send: {template: hello}}
gateways:
"""  # the gateway under test starts on line 8


def load_gateway(body: str, env_vars: dict[str, str] | None = None) -> Any:
    rs = load_rules_text(HEAD + body, "r.yaml", env_vars or {})
    return rs.config.gateways["gw"]


def problems(body: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules_text(HEAD + body, "r.yaml", {})
    return [str(p) for p in info.value.problems]


async def start(env: Env, cfg: Any) -> tuple[HttpGateway, Inbox]:
    """What `aftercall run` does with a checked gateway, then start it as the agent does."""
    [gw] = build_gateways({"gw": cfg}, callback_base=env.callback_base,
                          webhook_secret=lambda: WEBHOOK_SECRET).values()
    assert isinstance(gw, HttpGateway)
    inbox = Inbox()
    await gw.start(inbox.on_receipt, inbox.on_inbound)
    env.receiver.gateways[gw.name] = gw
    env.made.append(gw)
    return gw, inbox


def sms(text: str = "Your ticket #4521 is logged.") -> OutboundSms:
    return OutboundSms(message_id="m0001", to="+919812345678", sender="ACMECO", text=text)


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_generic_preset_from_rules_yaml_sends_and_maps_receipts(env: Env, method: str) -> None:
    cfg = load_gateway(f"""\
  gw:
    type: http
    preset: generic
    method: {method}
    url: {env.sim_url}/api/v1/messages
    username: aftercall
    password: {PASSWORD}
    request_template: {{to: "{{to}}", from: "{{sender}}", text: "{{text}}",
                       reference: "{{message_id}}", callback_url: "{{callback_url}}"}}
    response_id_path: data.id
    receipt_fields: {{message_id: reference, smsc_id: id, status: status, error_code: error}}
    status_map: {{delivered: delivered, undelivered: undelivered, expired: expired,
                  rejected: rejected, accepted: accepted}}
""")
    assert isinstance(cfg, HttpGatewayConfig) and cfg.method == method
    gw, inbox = await start(env, cfg)
    result = await gw.submit(sms())
    [msg] = env.core.messages
    assert msg.text == "Your ticket #4521 is logged." and result.smsc_ids == (msg.smsc_id,)
    await inbox.wait(lambda: any(r.state.final for r in inbox.receipts))
    final = [r for r in inbox.receipts if r.state.final]
    assert [(r.message_id, r.state) for r in final] == [("m0001", ReceiptState.DELIVERED)]


async def test_twilio_preset_from_rules_yaml_defaults_its_url_and_works(env: Env) -> None:
    default = load_gateway("  gw: {type: http, preset: twilio, account_sid: AC1, auth_token: t}\n")
    assert default.endpoint == "https://api.twilio.com"
    cfg = load_gateway(
        f"  gw: {{type: http, preset: twilio, url: '{env.sim_url}', account_sid: AC{'0' * 32}, "
        f"auth_token: {PASSWORD}}}\n")
    gw, inbox = await start(env, cfg)
    result = await gw.submit(sms())
    assert result.smsc_ids and result.smsc_ids[0].startswith("SM")
    await inbox.wait(lambda: any(r.state is ReceiptState.DELIVERED for r in inbox.receipts))


async def test_http_tps_is_honoured(env: Env) -> None:
    cfg = load_gateway(
        f"  gw: {{type: http, preset: kannel, url: '{env.sim_url}/cgi-bin/sendsms', "
        f"username: aftercall, password: {PASSWORD}, tps: 10}}\n")
    assert cfg.tps == 10.0
    gw = HttpGateway(cfg.bound("gw", env.callback_base, lambda: WEBHOOK_SECRET),
                     sleep=env.sleep, clock=lambda: env.clock[0])
    await gw.start(Inbox().on_receipt, Inbox().on_inbound)
    env.receiver.gateways[gw.name] = gw
    env.made.append(gw)
    for _ in range(5):
        await gw.submit(sms())
    # Five sends at 10/s on a fake clock: after the limiter's one-slot catch-up allowance,
    # each further send waits its 0.1 s.
    assert env.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_every_key_is_used_or_refused_with_its_line() -> None:
    assert problems(
        "  gw: {type: http, preset: kannel, url: 'http://k/cgi-bin/sendsms', username: u,\n"
        "       password: s3cr3t-x, method: POST, request_template: {to: '{to}'}}\n"
    ) == ["r.yaml:8:7: gateways.gw: preset kannel does not use method, request_template "
          "(it reads dlt_chain_id, dlt_tlvs, password, strip_plus, username)"]
    assert problems("  gw: {type: http, preset: generic, url: 'http://g/x'}\n") == [
        "r.yaml:8:7: gateways.gw: preset generic needs request_template"]
    assert problems("  gw: {type: http, preset: kannel, username: u, password: s3cr3t-x}\n") == [
        "r.yaml:8:7: gateways.gw: preset kannel needs url"]
    assert problems(
        "  gw: {type: http, preset: generic, url: 'http://g/x', method: GET,\n"
        "       request_template: {to: '{to}', nested: {a: '{text}'}}}\n"
    ) == ["r.yaml:8:7: gateways.gw: request_template: with method GET every value must be a "
          "string (it becomes one query parameter)"]


@pytest.mark.parametrize("body", [
    "  gw: {type: http, preset: generic, url: 'http://g/x', request_template: {to: '{to}'},\n"
    "       headers: {X-Key: k}, receipt_fields: {status: state}, timeout: 5s, tps: 3}\n",
    "  gw: {type: http, preset: twilio, account_sid: AC1, auth_token: t}\n",
    "  gw: {type: http, preset: jasmin, url: 'http://j/send', username: u, password: p,\n"
    "       dlt_tlvs: {dlt_entity_id: '0x1400', dlt_template_id: '0x1401'}}\n",
    "  gw: {type: smpp, host: 127.0.0.1, system_id: a, bind: split, binds: 2, tls: true}\n",
])
def test_a_gateway_that_passes_check_always_builds(body: str) -> None:
    cfg = load_gateway(body)
    built = build_gateways({"gw": cfg}, callback_base="http://127.0.0.1:8080",
                           webhook_secret=lambda: WEBHOOK_SECRET)
    assert list(built) == ["gw"]


def test_smpp_bind_and_tls_keys_reach_the_driver() -> None:
    cfg = load_gateway("  gw: {type: smpp, host: h, system_id: a, bind: transmitter, binds: 3, "
                       "window: 4, tls: true, tls_verify: 'false'}\n")
    assert isinstance(cfg, SmppConfig)
    [gw] = build_gateways({"gw": cfg}, callback_base="http://x", webhook_secret=str).values()
    assert gw.window == 12  # type: ignore[attr-defined]  # 4 per bind, 3 binds
    assert problems("  gw: {type: smpp, host: h, system_id: a, tls_verify: 'false'}\n") == [
        "r.yaml:8:7: gateways.gw: tls_ca and tls_verify need tls: true"]


def test_shipped_rules_yaml_backup_kannel_carries_dlt_ids() -> None:
    """Failover traffic goes to the Kannel backup; it must keep the message's DLT ids."""
    from pathlib import Path

    from agent.gateways.presets import kannel

    text = (Path(__file__).parent.parent.parent / "rules.yaml").read_text()
    cfg = load_rules_text(text, "rules.yaml", {}).config.gateways["backup"]
    assert isinstance(cfg, HttpGatewayConfig) and cfg.preset == "kannel"
    out = OutboundSms(message_id="m1", to="+919812345678", sender="ACMECO", text="Hi",
                      dlt_template_id="1107161234567890123", dlt_entity_id="1101000000000001")
    query = dict(kannel.build_submit(cfg.bound("backup", "http://a", lambda: "s"), out).query)
    # The route's PE-TM chain goes too (kannel.conf's TM_CHAIN smpp-tlv group: tag 0x1402).
    assert query["meta-data"] == ("?smpp?TM_CHAIN=1101456789012345678%2C1302157243747322354"
                                  "&PE_ID=1101000000000001&TEMPLATE_ID=1107161234567890123")


def test_readme_gateway_examples_pass_check_and_build() -> None:
    """The README's examples (one per kind) are what a user copies: they must load and build."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    section = readme.split("## Gateways", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 4
    env_vars = {"SMPP_PASSWORD": "pw", "KANNEL_USER": "u", "KANNEL_PASSWORD": "p",
                "JASMIN_USER": "j", "JASMIN_PASSWORD": "jp", "RELAY_PASSWORD": "r"}
    for block in blocks:
        name = block.split(":", 1)[0]
        body = "  gw:" + block.split(":", 1)[1].replace("\n", "\n  ").rstrip() + "\n"
        cfg = load_gateway(body.replace("backup: backup", ""), env_vars)
        built = build_gateways({name: cfg}, callback_base="http://127.0.0.1:8080",
                               webhook_secret=lambda: WEBHOOK_SECRET)
        assert list(built) == [name]
