"""HttpGateway against the simulator's HTTP face on loopback, one preset at a time, receipts included."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from agent.errors import GatewayAmbiguousError, GatewayPermanentError, GatewayTemporaryError
from agent.gateways.http import HttpGateway, parse_retry_after
from agent.gateways.presets.common import HttpGatewayConfig
from agent.gateways.webhooks import (
    Kind,
    ReplayCache,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookRequest,
    handle,
)
from agent.models import InboundSms, OutboundSms, Receipt, ReceiptState
from agent.sim.core import FaultConfig, SimCore
from agent.sim.http import make_http_app
from agent.sim.httpstate import SimHttpConfig

PASSWORD = "pa55-w0rd-xyz"
WEBHOOK_SECRET = "webhook-secret-1"
PRESETS = ["kannel", "jasmin", "twilio", "generic"]


class Inbox:
    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound: list[InboundSms] = []
        self._changed = asyncio.Event()

    async def on_receipt(self, r: Receipt) -> None:
        self.receipts.append(r)
        self._changed.set()

    async def on_inbound(self, s: InboundSms) -> None:
        self.inbound.append(s)
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)


class Receiver:
    """What the agent's web layer will do: mount the webhooks and hand results to the gateway."""

    def __init__(self) -> None:
        self.gateways: dict[str, HttpGateway] = {}
        self.replay = ReplayCache()
        self.refused: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/webhooks/{gateway}/{kind}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        gw = self.gateways[request.match_info["gateway"]]
        form = await request.post() if request.content_type.endswith("urlencoded") else None
        req = WebhookRequest(request.method, str(request.url), request.headers, request.query,
                             form, await request.read())
        kind = Kind(request.match_info["kind"])
        try:
            out = handle(gw.config, kind, req, now=datetime.now(UTC), replay=self.replay)
        except WebhookReplayError as exc:
            self.refused.append(str(exc))
            return web.Response(text="duplicate")
        except WebhookAuthError as exc:
            self.refused.append(str(exc))
            return web.Response(status=403)
        except WebhookPayloadError as exc:
            self.refused.append(str(exc))
            return web.Response(status=400)
        if out.receipt is not None:
            await gw.dispatch_receipt(out.receipt)
        if out.inbound is not None:
            await gw.dispatch_inbound(out.inbound)
        return web.Response(status=out.ack.status, text=out.ack.body, content_type=out.ack.content_type)


class Env:
    def __init__(self, core: SimCore, sim_url: str, receiver: Receiver, callback_base: str) -> None:
        self.core, self.sim_url, self.receiver, self.callback_base = core, sim_url, receiver, callback_base
        self.clock = [1000.0]
        self.sleeps: list[float] = []
        self.made: list[HttpGateway] = []

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.clock[0] += delay  # the simulator's throttle runs on this clock

    def config(self, preset: str, **kw: Any) -> HttpGatewayConfig:
        c: dict[str, Any] = {"name": f"gw-{preset}", "preset": preset, "callback_base": self.callback_base,
                             "backoff": (0.01, 0.5), "max_retries": 2, "timeout": 2.0}
        if preset == "kannel":
            c.update(url=f"{self.sim_url}/cgi-bin/sendsms", username="aftercall", password=PASSWORD,
                     webhook_secret=WEBHOOK_SECRET)
        elif preset == "jasmin":
            c.update(url=f"{self.sim_url}/send", username="aftercall", password=PASSWORD,
                     webhook_secret=WEBHOOK_SECRET)
        elif preset == "twilio":
            c.update(url=self.sim_url, account_sid="AC" + "0" * 32, auth_token=PASSWORD)
        else:
            c.update(url=f"{self.sim_url}/api/v1/messages", username="aftercall", password=PASSWORD,
                     webhook_secret=WEBHOOK_SECRET, response_id_path="data.id",
                     request_template={"to": "{to}", "from": "{sender}", "text": "{text}",
                                       "reference": "{message_id}", "callback_url": "{callback_url}"})
        c.update(kw)
        return HttpGatewayConfig(**c)

    async def gateway(self, preset: str, **kw: Any) -> tuple[HttpGateway, Inbox]:
        gw = HttpGateway(self.config(preset, **kw), sleep=self.sleep)
        inbox = Inbox()
        await gw.start(inbox.on_receipt, inbox.on_inbound)
        self.receiver.gateways[gw.name] = gw
        self.made.append(gw)
        return gw, inbox


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    receiver = Receiver()
    rcv = TestServer(receiver.app, host="127.0.0.1")
    await rcv.start_server()
    holder: list[float] = [1000.0]
    core = SimCore(FaultConfig(receipt_delay=0.01), seed=7, clock=lambda: holder[0])
    sim_cfg = SimHttpConfig(password=PASSWORD, auth_token=PASSWORD, webhook_secret=WEBHOOK_SECRET)
    sim = TestServer(make_http_app(core, sim_cfg), host="127.0.0.1")
    await sim.start_server()
    e = Env(core, str(sim.make_url("")).rstrip("/"), receiver, str(rcv.make_url("")).rstrip("/"))
    e.clock = holder
    try:
        yield e
    finally:
        for gw in e.made:
            await gw.close()
        await sim.close()
        await rcv.close()


def sms(i: int = 1, to: str = "+919812345678", text: str = "Your ticket #4521 is logged.") -> OutboundSms:
    return OutboundSms(message_id=f"m{i:04d}", to=to, sender="ACMECO", text=text)


@pytest.mark.parametrize("preset", PRESETS)
async def test_submit_then_receipt_reaches_the_handler(env: Env, preset: str) -> None:
    gw, inbox = await env.gateway(preset)
    result = await gw.submit(sms(1))
    assert result.message_id == "m0001" and result.segments == 1
    if preset == "kannel":
        assert result.smsc_ids == ()  # Kannel's answer has no id: receipts carry ours
    else:
        assert len(result.smsc_ids) == 1 and result.smsc_ids[0]
    [msg] = await env.core.wait_for_messages(1, timeout=5)
    assert (msg.channel, msg.dest, msg.source, msg.text) == (
        f"http:{preset}", "+919812345678", "ACMECO", "Your ticket #4521 is logged.")
    await inbox.wait(lambda: any(r.state is ReceiptState.DELIVERED for r in inbox.receipts))
    final = [r for r in inbox.receipts if r.state.final]
    assert len(final) == 1
    assert final[0].message_id == "m0001" and final[0].gateway == f"gw-{preset}"
    if preset != "kannel":
        assert final[0].smsc_id == result.smsc_ids[0]
    assert env.receiver.refused == []
    assert gw.healthy


@pytest.mark.parametrize("preset", ["kannel", "jasmin", "twilio", "generic"])
async def test_ucs2_text_arrives_intact(env: Env, preset: str) -> None:
    gw, _ = await env.gateway(preset)
    text = "नमस्ते! आपका टिकट दर्ज हो गया है 🙏 — “धन्यवाद”"
    result = await gw.submit(sms(2, text=text))
    assert result.segments == 1
    [msg] = await env.core.wait_for_messages(1, timeout=5)
    assert msg.text == text


@pytest.mark.parametrize("preset", ["kannel", "twilio", "generic"])  # Jasmin: 403, below
async def test_throttled_429_is_retried_after_retry_after(env: Env, preset: str) -> None:
    env.core.faults.throttle_tps = 1.0  # one per second on the simulator's (fake) clock
    gw, _ = await env.gateway(preset, backoff=(0.01, 2.0))
    await gw.submit(sms(1))
    await gw.submit(sms(2))  # refused with 429 + Retry-After: 1, then accepted
    assert len(env.sleeps) == 1 and env.sleeps[0] >= 1.0
    assert len(await env.core.wait_for_messages(2, timeout=5)) == 2


@pytest.mark.parametrize("preset", ["kannel", "twilio", "generic"])  # Jasmin: receipts, below
async def test_5xx_is_retried_then_temporary_error(env: Env, preset: str) -> None:
    env.core.faults.error_for = [(r"^\+91", 0x14)]  # ESME_RMSGQFUL: the SMSC queue is full
    gw, _ = await env.gateway(preset, max_retries=2)
    with pytest.raises(GatewayTemporaryError) as ei:
        await gw.submit(sms(1))
    assert ei.value.code in (500, 503, 20503)
    assert len(env.sleeps) == 2  # three attempts in all
    assert env.sleeps[0] <= env.sleeps[1] <= 0.5  # doubling, capped
    assert not gw.healthy
    env.core.faults.error_for = []
    await gw.submit(sms(2))
    assert gw.healthy


@pytest.mark.parametrize(("preset", "code", "reason"), [
    ("kannel", 403, "no_route"), ("twilio", 21211, "invalid_destination"),
    ("generic", 400, "rejected"),
])
async def test_4xx_is_a_permanent_error_without_retry(env: Env, preset: str, code: int, reason: str) -> None:
    env.core.faults.error_for = [(r"^\+1555", 0x0B)]  # ESME_RINVDSTADR
    gw, _ = await env.gateway(preset)
    with pytest.raises(GatewayPermanentError) as ei:
        await gw.submit(sms(1, to="+15550100"))
    assert (ei.value.code, ei.value.reason) == (code, reason)
    assert env.sleeps == []
    assert env.core.messages == []
    # One unroutable number says nothing about the gateway: traffic must not fail over.
    assert gw.healthy


@pytest.mark.parametrize("preset", PRESETS)
async def test_bad_credentials_never_leak_the_password(env: Env, preset: str) -> None:
    wrong = "wrong-" + PASSWORD
    kw: dict[str, Any] = {"auth_token": wrong} if preset == "twilio" else {"password": wrong}
    gw, _ = await env.gateway(preset, **kw)
    with capture_logs() as logs, pytest.raises(GatewayPermanentError) as ei:
        await gw.submit(sms(1))
    assert ei.value.reason == "auth_failed"
    assert not gw.healthy  # nothing will get through until the credentials are fixed
    assert wrong not in str(ei.value) and wrong not in repr(logs)
    assert ei.value.__cause__ is None


async def test_connection_refused_is_temporary(env: Env) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    gw, _ = await env.gateway("kannel", url=f"http://127.0.0.1:{port}/cgi-bin/sendsms", max_retries=1)
    with capture_logs() as logs, pytest.raises(GatewayTemporaryError) as ei:
        await gw.submit(sms(1))
    assert ei.value.reason == "connection_failed"
    assert len(env.sleeps) == 1
    assert PASSWORD not in str(ei.value) and PASSWORD not in repr(logs)


@pytest.mark.parametrize("preset", ["jasmin", "twilio"])
async def test_black_hole_after_sending_is_ambiguous_and_not_retried(env: Env, preset: str) -> None:
    env.core.faults.never_respond = True
    gw, _ = await env.gateway(preset, timeout=0.3)
    with pytest.raises(GatewayAmbiguousError) as ei:
        await gw.submit(sms(1))
    assert ei.value.reason == "no_response"
    assert env.sleeps == []


async def test_connection_dropped_after_request_is_ambiguous(env: Env) -> None:
    env.core.faults.drop_after = 0
    gw, _ = await env.gateway("kannel")
    with pytest.raises(GatewayAmbiguousError):
        await gw.submit(sms(1))
    assert env.sleeps == []


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_2xx_with_unknown_body_is_ambiguous(env: Env) -> None:
    async def odd(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>proxy says hello</html>")

    server = await _serve(odd)
    try:
        gw, _ = await env.gateway("kannel", url=str(server.make_url("/cgi-bin/sendsms")))
        with pytest.raises(GatewayAmbiguousError, match="unexpected body"):
            await gw.submit(sms(1))
    finally:
        await server.close()


async def test_retry_after_beyond_the_cap_goes_back_to_the_dispatcher(env: Env) -> None:
    calls = 0

    async def busy(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=429, text="slow down", headers={"Retry-After": "120"})

    server = await _serve(busy)
    try:
        gw, _ = await env.gateway("kannel", url=str(server.make_url("/cgi-bin/sendsms")))
        with pytest.raises(GatewayTemporaryError) as ei:
            await gw.submit(sms(1))
        assert calls == 1 and env.sleeps == []
        assert ei.value.retry_after == 120.0  # type: ignore[attr-defined]
        assert ei.value.reason == "throttled"
    finally:
        await server.close()


async def test_kannel_request_shape(env: Env) -> None:
    seen: list[dict[str, str]] = []

    async def kannel(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.Response(status=202, text="3: Queued for later delivery")

    server = await _serve(kannel)
    try:
        gw, _ = await env.gateway("kannel", url=str(server.make_url("/cgi-bin/sendsms")),
                                  strip_plus=True, dlt_tlvs={"dlt_entity_id": "PE_ID", "dlt_template_id": "TEMPLATE_ID"},
                                  extra_params={"smsc": "airtel"})
        out = OutboundSms(message_id="m1", to="+919812345678", sender="ACMECO", text="Hi €",
                          dlt_template_id="1107161234567890123", dlt_entity_id="1101000000000001")
        await gw.submit(out)
    finally:
        await server.close()
    [q] = seen
    assert q["to"] == "919812345678" and q["coding"] == "0" and q["charset"] == "UTF-8"
    assert q["text"] == "Hi €" and q["dlr-mask"] == "31" and q["smsc"] == "airtel"
    assert q["meta-data"] == "?smpp?PE_ID=1101000000000001&TEMPLATE_ID=1107161234567890123"
    # Kannel must receive its escape codes bare, our own parameters intact.
    dlr = q["dlr-url"]
    assert dlr.startswith(f"{env.callback_base}/webhooks/gw-kannel/receipt?mid=m1&t=")
    for code in ("type=%d", "answer=%A", "ts=%T", "fid=%F"):
        assert code in dlr


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    # what a misbehaving gateway sends: capped at a day, so the retry's time can't overflow
    # (now + 10**17 s, or a date in year 9999, raised OverflowError and stopped the send)
    for huge in ("99999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"):
        wait = parse_retry_after(huge, now)
        assert wait == 86_400.0
        assert now + timedelta(seconds=wait) > now
    assert parse_retry_after("\u00b2\u00b3") is None  # superscripts: not a number of seconds


async def test_kannel_immediate_reply_sent_is_accepted(env: Env) -> None:
    """smsbox with ``immediate-sendsms-reply = true`` answers ``202 Sent.``: taken, not unknown."""
    async def kannel(request: web.Request) -> web.Response:
        return web.Response(status=202, text="Sent.")

    server = await _serve(kannel)
    try:
        gw, _ = await env.gateway("kannel", url=str(server.make_url("/cgi-bin/sendsms")))
        result = await gw.submit(sms(1))
    finally:
        await server.close()
    assert result.smsc_ids == () and result.segments == 1
    assert gw.healthy


async def test_kannel_403_tells_no_route_from_bad_credentials(env: Env) -> None:
    """Both come back as 403 from smsbox; only refused credentials make the gateway unhealthy."""
    answers = ["Not routable. Do not try again.", "Authorization failed for sendsms"]

    async def kannel(request: web.Request) -> web.Response:
        return web.Response(status=403, text=answers.pop(0))

    server = await _serve(kannel)
    try:
        gw, _ = await env.gateway("kannel", url=str(server.make_url("/cgi-bin/sendsms")))
        with pytest.raises(GatewayPermanentError) as no_route:
            await gw.submit(sms(1))
        assert no_route.value.reason == "no_route" and gw.healthy
        with pytest.raises(GatewayPermanentError) as refused:
            await gw.submit(sms(2))
        assert refused.value.reason == "auth_failed" and not gw.healthy
    finally:
        await server.close()
    assert env.sleeps == []


async def test_jasmin_carries_dlt_ids_as_custom_tlvs(env: Env) -> None:
    gw, _ = await env.gateway("jasmin", dlt_tlvs={"dlt_entity_id": "0x1400",
                                                  "dlt_template_id": "0x1401"})
    out = OutboundSms(message_id="m1", to="+919812345678", sender="ACMECO", text="Hi",
                      dlt_template_id="1107161234567890123", dlt_entity_id="1101000000000001")
    await gw.submit(out)
    [msg] = env.core.messages
    assert msg.tlvs == {0x1400: b"1101000000000001", 0x1401: b"1107161234567890123"}


async def test_jasmin_carries_the_dlt_chain_on_0x1402(env: Env) -> None:
    chain = "1101456789012345678,1302157243747322354"
    gw, _ = await env.gateway("jasmin", dlt_chain_id=chain)
    await gw.submit(OutboundSms(message_id="m2", to="+919812345678", sender="ACMECO", text="Hi"))
    [msg] = env.core.messages
    assert msg.tlvs == {0x1402: chain.encode()}


async def test_jasmin_throughput_quota_is_retried_with_backoff(env: Env) -> None:
    env.core.faults.throttle_tps = 1.0  # Jasmin: 403 'User throughput exceeded', no Retry-After
    gw, _ = await env.gateway("jasmin", backoff=(0.5, 2.0), max_retries=5)
    await gw.submit(sms(1))
    await gw.submit(sms(2))  # refused until the (fake) clock passes a second, then accepted
    assert env.sleeps and sum(env.sleeps) >= 0.5 and gw.healthy
    assert len(await env.core.wait_for_messages(2, timeout=5)) == 2


@pytest.mark.parametrize(("status", "name"), [(0x0B, "ESME_RINVDSTADR"), (0x14, "ESME_RMSGQFUL")])
async def test_jasmin_smsc_refusal_comes_back_as_a_rejected_receipt(env: Env, status: int,
                                                                     name: str) -> None:
    """Jasmin answers 'Success' before its SMPP connector submits; an SMSC's refusal (final,
    or temporary once Jasmin's own retries are spent) is a level-1 receipt."""
    env.core.faults.error_for = [(r"^\+1555", status)]
    gw, inbox = await env.gateway("jasmin")
    result = await gw.submit(sms(1, to="+15550100"))
    assert result.smsc_ids and gw.healthy
    await inbox.wait(lambda: any(r.state is ReceiptState.REJECTED for r in inbox.receipts))
    [r] = inbox.receipts
    assert r.message_id == "m0001" and name in r.raw
    assert env.core.messages == [] and env.sleeps == []


@pytest.mark.parametrize("field", ["timeout", "connect_timeout", "keepalive_timeout", "backoff"])
@pytest.mark.parametrize("value", ["inf", "1e308", "nan"])
def test_a_gateway_time_that_would_never_elapse_is_refused(field: str, value: str) -> None:
    base = {"type": "http", "name": "g", "preset": "kannel", "url": "http://127.0.0.1:1/x",
            "username": "u", "password": "p"}
    with pytest.raises(ValueError, match=field):
        HttpGatewayConfig(**base, **{field: (value, value) if field == "backoff" else value})
    HttpGatewayConfig(**base, **{field: ("1", "2m") if field == "backoff" else "2m"})
