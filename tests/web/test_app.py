"""The web app on a loopback port: webhooks per preset, links, API, /metrics, /healthz, auth."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from web_helpers import MakeClient, Recorder, seed
from yarl import URL

from agent.dispatch import Dispatcher
from agent.gateways.presets import generic, twilio
from agent.gateways.presets.common import HttpGatewayConfig
from agent.metrics import Metrics
from agent.models import ReceiptState
from agent.store.sqlite import SqliteStore

PUBLIC = "https://agent.example.com"
SECRET = "whsec-test-123"
TW_TOKEN = "twilio-token-abc"
SID = "AC" + "1" * 32
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def cfg(preset: str) -> HttpGatewayConfig:
    base: dict[str, Any] = {"name": f"gw-{preset}", "preset": preset, "url": "http://127.0.0.1:1/x",
                            "callback_base": PUBLIC}
    if preset in ("kannel", "jasmin"):
        base.update(username="u", password="p", webhook_secret=SECRET)
    elif preset == "twilio":
        base.update(url="https://api.twilio.com", account_sid=SID, auth_token=TW_TOKEN)
    else:
        base.update(request_template={"to": "{to}", "text": "{text}", "reference": "{message_id}"},
                    webhook_secret=SECRET)
    return HttpGatewayConfig(**base)


CONFIGS = {c.name: c for c in map(cfg, ("kannel", "jasmin", "twilio", "generic"))}


def local(url: str) -> str:
    """The path+query a gateway would hit, minus the public origin (the test server's is used)."""
    u = URL(url)
    return str(u.relative())


# -- webhooks -------------------------------------------------------------------------------------


async def test_kannel_receipt_updates_the_row_once_and_replay_is_acked_without_action(
    store: SqliteStore, make_client: MakeClient
) -> None:
    seeded = await seed(store)
    mid = seeded.ids["m3"]  # undelivered: a later DELIVERED receipt must not be applied twice
    d = Dispatcher(store, {})
    calls: list[Any] = []

    async def on_receipt(r: Any) -> None:
        calls.append(r)
        await d.on_receipt(r)

    client = await make_client(webhooks=CONFIGS, on_receipt=on_receipt, clock=lambda: NOW)
    url = CONFIGS["gw-kannel"].receipt_url(mid)
    assert url is not None
    q = {"type": "2", "answer": "id:X sub:001 dlvrd:000 submit date:2405011200 done date:"
         "2405011201 stat:EXPIRED err:002 text:Hi", "ts": "1714564860"}
    path = local(url) + "&" + urlencode(q)
    r = await client.get(path)
    assert (r.status, await r.text()) == (200, "OK")
    r = await client.get(path)  # Kannel retried: acknowledged, not applied again
    assert (r.status, await r.text()) == (200, "OK")
    assert len(calls) == 1
    receipts = await store.receipts(message_id=mid)
    assert [x.state for x in receipts].count("expired") == 1


async def test_bad_token_is_403_and_changes_nothing(store: SqliteStore,
                                                    make_client: MakeClient) -> None:
    seeded = await seed(store)
    rec = Recorder()
    client = await make_client(webhooks=CONFIGS, recorder=rec)
    url = CONFIGS["gw-kannel"].receipt_url(seeded.ids["m2"])
    assert url is not None
    forged = local(url).replace("t=", "t=0") + "&type=16"
    before = await store.get_message(seeded.ids["m2"])
    r = await client.get(forged)
    assert r.status == 403 and "secret" not in await r.text()
    assert rec.receipts == [] and await store.get_message(seeded.ids["m2"]) == before


async def test_unknown_gateway_is_404(make_client: MakeClient) -> None:
    client = await make_client(webhooks=CONFIGS)
    r = await client.post("/webhooks/nope/receipt", data=b"x")
    assert r.status == 404


async def test_jasmin_receipt_and_inbound_are_acked_with_jasmin_ack(
    make_client: MakeClient,
) -> None:
    rec = Recorder()
    client = await make_client(webhooks=CONFIGS, recorder=rec)
    c = CONFIGS["gw-jasmin"]
    r = await client.post(local(c.receipt_url("msg-9") or ""), data={
        "id": "16fd2706", "message_status": "DELIVRD", "level": "2", "donedate": "2405011201"})
    assert (r.status, await r.text()) == (200, "ACK/Jasmin")
    r = await client.post(local(c.inbound_url() or ""), data={
        "id": "a", "from": "+919812345678", "to": "ACMECO", "origin-connector": "smsc",
        "coding": "0", "content": "C"})
    assert (r.status, await r.text()) == (200, "ACK/Jasmin")
    assert [x.state for x in rec.receipts] == [ReceiptState.DELIVERED]
    assert rec.receipts[0].message_id == "msg-9"
    assert [(m.sender, m.text) for m in rec.inbound] == [("+919812345678", "C")]


async def test_jasmin_missing_field_is_400_naming_it(make_client: MakeClient) -> None:
    client = await make_client(webhooks=CONFIGS)
    r = await client.post(local(CONFIGS["gw-jasmin"].receipt_url("m") or ""),
                          data={"id": "x", "level": "1"})
    assert r.status == 400 and "message_status" in await r.text()


async def test_twilio_signed_for_the_public_url_behind_a_proxy(make_client: MakeClient) -> None:
    rec = Recorder()
    metrics = Metrics()
    client = await make_client(webhooks=CONFIGS, recorder=rec, metrics=metrics)
    c = CONFIGS["gw-twilio"]
    url = c.receipt_url("msg-42")
    assert url is not None
    form = {"AccountSid": SID, "From": "+15017122661", "To": "+919812345678",
            "MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered"}
    sig = twilio.signature(TW_TOKEN.encode(), url, form.items())
    r = await client.post(local(url), data=form, headers={"X-Twilio-Signature": sig})
    assert r.status == 200
    assert rec.receipts[0].state is ReceiptState.DELIVERED
    bad = await client.post(local(url), data={**form, "MessageStatus": "failed"},
                            headers={"X-Twilio-Signature": sig})
    assert bad.status == 403 and len(rec.receipts) == 1
    text = await (await client.get("/metrics")).text()
    assert 'aftercall_receipts_total{state="delivered"} 1.0' in text


async def test_twilio_inbound_answers_empty_twiml(make_client: MakeClient) -> None:
    rec = Recorder()
    client = await make_client(webhooks=CONFIGS, recorder=rec)
    url = CONFIGS["gw-twilio"].inbound_url() or ""
    form = {"AccountSid": SID, "From": "+919812345678", "To": "+15017122661", "Body": "STOP"}
    sig = twilio.signature(TW_TOKEN.encode(), url, form.items())
    r = await client.post(local(url), data=form, headers={"X-Twilio-Signature": sig})
    assert r.status == 200 and r.content_type == "text/xml"
    assert rec.inbound[0].text == "STOP"


async def test_generic_signed_json_stale_and_oversized(make_client: MakeClient) -> None:
    rec = Recorder()
    client = await make_client(webhooks=CONFIGS, recorder=rec, clock=lambda: NOW)
    body = json.dumps({"id": "G1", "reference": "msg-1", "status": "DELIVERED"}).encode()
    t = int(NOW.timestamp())
    headers = {"X-Signature": generic.sign(SECRET.encode(), t, body),
               "Content-Type": "application/json"}
    r = await client.post("/webhooks/gw-generic/receipt", data=body, headers=headers)
    assert (r.status, await r.json()) == (200, {"ok": True})
    again = await client.post("/webhooks/gw-generic/receipt", data=body, headers=headers)
    assert again.status == 200 and len(rec.receipts) == 1  # replay: acked, not acted on
    stale = {**headers, "X-Signature": generic.sign(SECRET.encode(), t - 3600, body)}
    assert (await client.post("/webhooks/gw-generic/receipt", data=body,
                              headers=stale)).status == 403
    huge = b"{" + b" " * (70 * 1024) + b"}"
    r = await client.post("/webhooks/gw-generic/receipt", data=huge, headers={
        "X-Signature": generic.sign(SECRET.encode(), t, huge), "Content-Type": "application/json"})
    assert r.status == 413 and len(rec.receipts) == 1


async def test_handler_failure_answers_503_and_the_retry_is_processed(
    make_client: MakeClient,
) -> None:
    from agent.errors import StoreError

    seen: list[Any] = []

    async def flaky(r: Any) -> None:
        if not seen:
            seen.append("failed")
            raise StoreError("disk full")
        seen.append(r)

    client = await make_client(webhooks=CONFIGS, on_receipt=flaky)
    path = local(CONFIGS["gw-kannel"].receipt_url("m-1") or "") + "&type=1"
    assert (await client.get(path)).status == 503
    assert (await client.get(path)).status == 200  # not mistaken for a replay
    assert len(seen) == 2


# -- tracked links --------------------------------------------------------------------------------


async def test_link_redirects_and_records_the_click(store: SqliteStore,
                                                    make_client: MakeClient) -> None:
    seeded = await seed(store)
    client = await make_client()
    r = await client.get(f"/l/{seeded.codes['m2']}", allow_redirects=False,
                         headers={"User-Agent": "Mozilla/5.0 (Android)"})
    assert r.status == 302 and r.headers["Location"] == "https://help.acme.in/t/m2"
    async with __import__("agent.store", fromlist=["x"]).report_source(store) as rd:
        rows = await rd.rows("SELECT user_agent FROM clicks WHERE code = ?", [seeded.codes["m2"]])
    assert [x["user_agent"] for x in rows] == ["Mozilla/5.0 (Android)"]


@pytest.mark.parametrize("code", ["AAAAAAAAAA", "short", "Codem1XYZ!", "Codem1XYZ1x"])
async def test_unknown_or_malformed_code_is_a_plain_404(store: SqliteStore,
                                                        make_client: MakeClient,
                                                        code: str) -> None:
    await seed(store)
    client = await make_client(bound_to_loopback=False, dashboard_token="tok")  # /l/ is public
    r = await client.get(f"/l/{code}", allow_redirects=False)
    assert r.status == 404 and await r.text() == "not found\n"


# -- API ------------------------------------------------------------------------------------------


async def test_api_messages_filters_and_masks(store: SqliteStore, make_client: MakeClient) -> None:
    seeded = await seed(store)
    client = await make_client()
    body = await (await client.get("/api/messages")).json()
    assert body["count"] == 7
    by_id = {m["id"]: m for m in body["messages"]}
    m1 = by_id[seeded.ids["m1"]]
    assert m1["number"] == "+91******5610" and m1["status"] == "delivered"
    assert m1["clicks"] == 2 and m1["replies"] == 1 and m1["receipt_state"] == "delivered"
    assert m1["hangup_to_submit_ms"] == 20.0 and m1["delivery_seconds"] is not None
    rule = await (await client.get("/api/messages?rule=missed-call-sorry")).json()
    assert {m["id"] for m in rule["messages"]} == {seeded.ids[k] for k in ("m5", "m6", "m7")}
    st = await (await client.get("/api/messages?status=suppressed,failed")).json()
    assert sorted(m["reason"] for m in st["messages"]) == ["dnd", "opt_out", "rejected"]
    day = await (await client.get("/api/messages?since=2024-05-02&until=2024-05-02")).json()
    assert day["count"] == 3
    num = await (await client.get("/api/messages?number=%2B919876500001&unmasked=1")).json()
    assert [m["number"] for m in num["messages"]] == ["+919876500001"]
    assert (await client.get("/api/messages?limit=5000")).status == 400
    bad = await client.get("/api/messages?status=sent")
    assert bad.status == 400 and "status" in (await bad.json())["error"]
    assert (await client.get("/api/messages?since=yesterday")).status == 400


async def test_api_report_and_call(store: SqliteStore, make_client: MakeClient) -> None:
    seeded = await seed(store)
    client = await make_client()
    rep = await (await client.get("/api/report")).json()
    assert rep["total"]["sent"] == 4 and rep["total"]["delivered"] == 3
    assert {f["key"] for f in rep["by_rule"]} == {"support-followup", "missed-call-sorry"}
    call = await (await client.get("/api/calls/1714554000.1")).json()
    assert [m["id"] for m in call["messages"]] == [seeded.ids["m1"]]
    assert (await client.get("/api/calls/nope")).status == 404


# -- metrics, health, auth ------------------------------------------------------------------------


async def test_metrics_exposes_every_metric_name(make_client: MakeClient) -> None:
    client = await make_client()
    r = await client.get("/metrics")
    text = await r.text()
    assert r.status == 200 and r.content_type == "text/plain"
    for name in ("aftercall_calls_total", "aftercall_rule_matches_total",
                 "aftercall_messages_total", "aftercall_gateway_submit_seconds",
                 "aftercall_hangup_to_submit_seconds", "aftercall_ami_queue_depth",
                 "aftercall_ami_reconnects_total", "aftercall_ami_events_dropped_total",
                 "aftercall_receipts_total", "aftercall_replies_total",
                 "aftercall_store_healthy"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


async def test_healthz_ok_then_503_naming_the_part_that_is_down(
    store: SqliteStore, make_client: MakeClient
) -> None:
    ami = {"ok": True}
    client = await make_client(health={"ami": lambda: dict(ami),
                                       "store": __import__("agent.web.deps", fromlist=["x"])
                                       .store_health(store)})
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    await store.close()  # the store can no longer write
    r = await client.get("/healthz")
    body = await r.json()
    assert r.status == 503 and body["down"] == ["store"]
    text = await (await client.get("/metrics")).text()
    assert "aftercall_store_healthy 0.0" in text


async def test_token_required_beyond_loopback(store: SqliteStore, make_client: MakeClient) -> None:
    await seed(store)
    client = await make_client(bound_to_loopback=False, dashboard_token="s3cret-token")
    for path in ("/", "/api/messages", "/api/report", "/metrics"):
        assert (await client.get(path, allow_redirects=False)).status == 401, path
    assert (await client.get("/healthz")).status == 200
    ok = await client.get("/api/messages",
                          headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 200
    assert (await client.get("/api/messages", headers={"Authorization": "Bearer nope"})).status \
        == 401
    r = await client.get("/?token=s3cret-token", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/"
    cookie = r.cookies["aftercall_session"].value
    assert "s3cret-token" not in cookie
    again = await client.get("/api/report", cookies={"aftercall_session": cookie})
    assert again.status == 200
    unmasked = await (await client.get("/api/messages?unmasked=1", headers={
        "Authorization": "Bearer s3cret-token"})).json()
    assert any(m["number"] == "+919812345610" for m in unmasked["messages"])


async def test_refuses_to_serve_beyond_loopback_without_a_token(
    make_client: MakeClient,
) -> None:
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="dashboard token"):
        await make_client(bound_to_loopback=False)


async def test_dashboard_page_is_served(make_client: MakeClient) -> None:
    client = await make_client()
    r = await client.get("/")
    assert r.status == 200 and "aftercall" in await r.text()
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert (await client.get("/static/app.js")).status == 200
