"""Forged and replayed webhooks per preset against the real aiohttp app on loopback and a real
SQLite store (issue #19, findings 3, 4, 9 and 10's undecodable body)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs
from test_app import CONFIGS, SID, TW_TOKEN, cfg, local
from web_helpers import BASE, MakeClient, Recorder, sent

from agent.dispatch import Dispatcher
from agent.gateways.presets import twilio
from agent.gateways.presets.common import HttpGatewayConfig
from agent.metrics import Metrics
from agent.models import MessageState
from agent.loop.replies import ReplyHandler
from agent.rules.loader import load_rules
from agent.store.sqlite import SqliteStore
from agent.web.app import WebDeps, make_app

RULES = Path(__file__).parents[2] / "rules.yaml"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CALLER = "+919812345678"


async def test_receipt_token_for_one_message_cannot_mark_another(
    store: SqliteStore, make_client: MakeClient
) -> None:
    a = await sent(store, BASE, NOW)
    b = await sent(store, replace(BASE, call_id="other"), NOW)
    disp = Dispatcher(store, {}, clock=lambda: NOW)
    for preset, form in (("kannel", {"type": "2", "mid": b}),
                         ("jasmin", {"id": "x1", "message_status": "UNDELIV", "mid": b})):
        c = CONFIGS[f"gw-{preset}"]
        client = await make_client(webhooks=CONFIGS, on_receipt=disp.on_receipt)
        url = local(c.receipt_url(a) or "")
        r = await (client.post(url, data=form) if preset == "jasmin"
                   else client.request("POST", url, data=form))
        assert r.status == 403, (preset, await r.text())
    for mid in (a, b):
        row = await store.get_message(mid)
        assert row is not None and row.state is MessageState.SUBMITTED


def _kannel_mo(allowed: tuple[str, ...] = ()) -> dict[str, HttpGatewayConfig]:
    c = cfg("kannel").model_copy(update={"allowed_sources": allowed})
    return {c.name: c}


_TS = iter(range(1714564860, 1714574860))


async def _mo(client: TestClient[Any, Any], c: HttpGatewayConfig, text: str) -> int:
    r = await client.get(local(c.inbound_url() or ""), params={
        "from": CALLER, "to": "ACMECO", "text": text, "ts": str(next(_TS))})
    return r.status


async def test_bearer_url_mo_can_not_opt_a_stranger_back_in(
    store: SqliteStore, make_client: MakeClient
) -> None:
    rules = load_rules(RULES, env={})
    disp = Dispatcher(store, {}, clock=lambda: NOW)
    replies = ReplyHandler(store, rules, disp.submit_now, clock=lambda: NOW)
    open_url = _kannel_mo()
    client = await make_client(webhooks=open_url, on_inbound=replies.handle, clock=lambda: NOW)
    c = next(iter(open_url.values()))
    assert await _mo(client, c, "STOP") == 200
    assert await store.is_opted_out(CALLER)  # opting out is the safe direction: honoured
    with capture_logs() as logs:
        assert await _mo(client, c, "START") == 200
    assert await store.is_opted_out(CALLER)  # anyone with the URL could have sent it
    assert any(e["event"] == "opt_in_refused" for e in logs)

    # From an allowed source (the test client is on loopback) the same START is honoured.
    trusted = _kannel_mo(("127.0.0.0/8", "::1"))
    client = await make_client(webhooks=trusted, on_inbound=replies.handle, clock=lambda: NOW)
    assert await _mo(client, next(iter(trusted.values())), "START") == 200
    assert not await store.is_opted_out(CALLER)


async def test_allowed_sources_refuse_other_peers(make_client: MakeClient) -> None:
    rec = Recorder()
    elsewhere = _kannel_mo(("192.0.2.0/24",))
    client = await make_client(webhooks=elsewhere, recorder=rec)
    assert await _mo(client, next(iter(elsewhere.values())), "STOP") == 403
    assert rec.inbound == []


async def test_twilio_replay_with_a_fresh_idempotency_header_and_after_a_restart(
    store: SqliteStore,
) -> None:
    c = CONFIGS["gw-twilio"]
    url = c.inbound_url() or ""
    form = {"AccountSid": SID, "MessageSid": "SM" + "b" * 32, "From": CALLER,
            "To": "+15017122661", "Body": "START"}
    sig = twilio.signature(TW_TOKEN.encode(), url, form.items())
    seen: list[str] = []

    async def on_inbound(sms: Any) -> None:
        seen.append(sms.text)

    async def boot() -> TestClient[Any, Any]:  # a fresh app: its memory cache is empty
        deps = WebDeps(store=store, metrics=Metrics(), on_receipt=on_inbound,
                       on_inbound=on_inbound, webhooks=CONFIGS, clock=lambda: NOW)
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(deps), host="127.0.0.1"))
        await client.start_server()
        return client

    first = await boot()
    try:
        for token in ("idem-1", "idem-2"):  # the header is unsigned: a replayer changes it
            r = await first.post(local(url), data=form, headers={
                "X-Twilio-Signature": sig, "I-Twilio-Idempotency-Token": token})
            assert r.status == 200
    finally:
        await first.close()
    second = await boot()  # a restart
    try:
        r = await second.post(local(url), data=form, headers={
            "X-Twilio-Signature": sig, "I-Twilio-Idempotency-Token": "idem-3"})
        assert r.status == 200
    finally:
        await second.close()
    assert seen == ["START"]


async def test_undecodable_form_body_is_400_before_authentication(
    make_client: MakeClient,
) -> None:
    rec = Recorder()
    client = await make_client(webhooks=CONFIGS, recorder=rec)
    for name in CONFIGS:
        with capture_logs() as logs:
            r = await client.post(f"/webhooks/{name}/inbound", data=b"text=\xff\xfe%ZZ&from=\xc3",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 400, (name, r.status, await r.text())
        assert not any(e.get("exc_info") for e in logs)
    assert rec.inbound == []


async def test_generic_receipt_pointed_at_another_message_is_refused(
    make_client: MakeClient,
) -> None:
    import json

    from agent.gateways.presets import generic

    rec = Recorder()
    client = await make_client(webhooks=CONFIGS, recorder=rec, clock=lambda: NOW)
    body = json.dumps({"id": "G1", "reference": "msg-A", "status": "DELIVERED"}).encode()
    headers = {"X-Signature": generic.sign(b"whsec-test-123", int(NOW.timestamp()), body),
               "Content-Type": "application/json"}
    r = await client.post("/webhooks/gw-generic/receipt?mid=msg-B", data=body, headers=headers)
    assert r.status == 403 and rec.receipts == []
