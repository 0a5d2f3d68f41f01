"""Debian's Kannel 1.4.5 as a real peer, configured from gateway_conf/kannel.conf:
(a) bearerbox as an SMPP client of the simulator, (b) the agent's Kannel preset through real
Kannel to the simulator, receipts back to the agent's webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kannel_peer import PASSWORD, USERNAME, Kannel, running_kannel
from test_http_gateway import Inbox, Receiver

from agent.errors import GatewayPermanentError
from agent.gateways.http import HttpGateway
from agent.gateways.presets.common import HttpGatewayConfig
from agent.models import OutboundSms, ReceiptState
from agent.sim.core import FaultConfig
from agent.sim.main import RunningSim, start_sim

SMSC_USER, SMSC_PASSWORD = "kannel", "kpw123"
SECRET = "kannel-webhook-secret"
GSM_EXT = "Price: 10€ {ok} [x] ~^|\\"
UCS2 = "नमस्ते, आपका टिकट दर्ज है 🙏"
LONG = ("Your ticket 4521 is logged; an engineer will call you back within four hours. "
        * 5)[:400]  # 3 parts of 153 GSM-7 characters


class Peer:
    def __init__(self, sim: RunningSim, kannel: Kannel) -> None:
        self.sim, self.kannel = sim, kannel

    async def wait_messages(self, n: int, timeout: float = 10.0) -> None:
        await self.sim.core.wait_for_messages(n, timeout)


async def _peer(tmp_path: Path, extra: Mapping[str, Mapping[str, str]] | None = None
                ) -> AsyncIterator[Peer]:
    sim = await start_sim(smpp_port=0, http_port=None, system_id=SMSC_USER,
                          password=SMSC_PASSWORD, faults=FaultConfig(receipt_delay=0.05), seed=5)
    try:
        async with running_kannel(tmp_path, sim.smpp_port, smsc_user=SMSC_USER,
                                  smsc_password=SMSC_PASSWORD, extra=extra) as kannel:
            yield Peer(sim, kannel)
    finally:
        await sim.stop()


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[Peer]:
    # +1555... is a prefix this test's SMSC link refuses: Kannel's "Not routable" case.
    async for p in _peer(tmp_path, {"smsc": {"denied-prefix": "+1555"},
                                    "smsbox": {"http-queue-delay": "1"}}):
        yield p


async def sendsms(kannel: Kannel, text: str, **extra: str) -> tuple[int, str]:
    params = {"username": USERNAME, "password": PASSWORD, "from": "ACMECO",
              "to": "+919812345678", "text": text, "charset": "UTF-8", **extra}
    async with aiohttp.ClientSession() as http, http.get(kannel.sendsms_url, params=params) as r:
        return r.status, await r.text()


# -- (a) bearerbox as an SMPP client of the simulator ----------------------------------------


async def test_kannel_smpp_encodings_and_concatenation_reach_the_simulator(peer: Peer) -> None:
    assert await sendsms(peer.kannel, GSM_EXT, coding="0") == (202, "0: Accepted for delivery")
    assert (await sendsms(peer.kannel, UCS2, coding="2"))[0] == 202
    assert (await sendsms(peer.kannel, LONG, coding="0"))[0] == 202
    await peer.wait_messages(3)
    got = {m.text: m.parts for m in peer.sim.core.messages}
    assert got == {GSM_EXT: 1, UCS2: 1, LONG: 3}  # the sample's max-messages keeps every part
    # Kannel's queue does not promise submission order across messages: judge each PDU by
    # what it is, not by where it came in.
    pdus = list(peer.sim.smpp.submitted)
    single = [p for p in pdus if not p.esm_class & 0x40]
    parts = [p for p in pdus if p.esm_class & 0x40]  # UDH concatenation
    assert sorted(p.data_coding for p in single) == [0x00, 0x08]
    assert len(parts) == 3 and sorted(p.short_message[5] for p in parts) == [1, 2, 3]
    assert {p.short_message[4] for p in parts} == {3}  # one reference, three parts
    assert all(p.source_addr_ton == 5 for p in pdus)  # alphanumeric sender, autodetected


async def test_kannel_receipts_reach_a_dlr_url(peer: Peer) -> None:
    seen: list[Mapping[str, str]] = []
    got = asyncio.Event()

    async def dlr(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if request.query.get("type") == "1":
            got.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/dlr", dlr)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/dlr")) + "?type=%d&fid=%F&answer=%A"
        status, _ = await sendsms(peer.kannel, "Hello", **{"dlr-mask": "31", "dlr-url": url})
        assert status == 202
        await asyncio.wait_for(got.wait(), 10)
    finally:
        await server.close()
    [delivered] = [q for q in seen if q["type"] == "1"]
    [msg] = peer.sim.core.messages
    assert delivered["fid"] == msg.smsc_id and "stat:DELIVRD" in delivered["answer"]


# -- (b) the agent's Kannel preset through real Kannel ---------------------------------------


class FlakyReceiver(Receiver):
    """The agent's webhooks, answering 503 to the first final receipt (a busy store)."""

    def __init__(self) -> None:
        self.refusals = 1
        super().__init__()

    async def _handle(self, request: web.Request) -> web.Response:
        if (request.match_info["kind"] == "receipt" and request.query.get("type") == "1"
                and self.refusals):
            self.refusals -= 1
            return web.Response(status=503, text="try again")
        return await super()._handle(request)


@pytest.fixture
async def agent_side() -> AsyncIterator[tuple[FlakyReceiver, str]]:
    receiver = FlakyReceiver()
    server = TestServer(receiver.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def kannel_gateway(peer: Peer, receiver: Receiver, base: str, **kw: Any
                         ) -> tuple[HttpGateway, Inbox]:
    cfg = HttpGatewayConfig(
        type="http", preset="kannel", url=peer.kannel.sendsms_url, username=USERNAME,
        password=PASSWORD, dlt_tlvs={"dlt_entity_id": "PE_ID", "dlt_template_id": "TEMPLATE_ID",
                                     "dlt_chain_id": "TM_CHAIN"},
        dlt_chain_id=CHAIN, max_retries=0, **kw,
    ).bound("backup", base, lambda: SECRET)
    gw = HttpGateway(cfg)
    inbox = Inbox()
    await gw.start(inbox.on_receipt, inbox.on_inbound)
    receiver.gateways[gw.name] = gw
    return gw, inbox


CHAIN = "1101000000000001,1302157243747322354"  # PE id, then the telemarketer's


def out(i: int, text: str, to: str = "+919812345678") -> OutboundSms:
    return OutboundSms(message_id=f"m{i}", to=to, sender="ACMECO", text=text,
                       dlt_entity_id="1101000000000001", dlt_template_id="1107161234567890123")


async def test_agent_kannel_preset_end_to_end(peer: Peer,
                                              agent_side: tuple[FlakyReceiver, str]) -> None:
    receiver, base = agent_side
    gw, inbox = await kannel_gateway(peer, receiver, base)
    try:
        for i, text in enumerate([GSM_EXT, UCS2, LONG], start=1):
            result = await gw.submit(out(i, text))
            assert result.smsc_ids == ()  # Kannel's answer has no id; receipts carry ours
        await peer.wait_messages(3)
        # Every message reached the SMSC whole, with its DLT ids as the operator's TLVs.
        assert {m.text for m in peer.sim.core.messages} == {GSM_EXT, UCS2, LONG}
        for m in peer.sim.core.messages:
            assert m.tlvs[0x1400] == b"1101000000000001"
            assert m.tlvs[0x1401] == b"1107161234567890123"
            assert m.tlvs[0x1402] == CHAIN.encode()  # the route's PE-TM chain
        # Receipts come back to the agent's webhook, the first one after a 503 (Kannel retried
        # it: the sample's http-request-retry).
        await inbox.wait(lambda: {r.message_id for r in inbox.receipts
                                  if r.state is ReceiptState.DELIVERED} == {"m1", "m2", "m3"},
                         timeout=15)
        assert receiver.refusals == 0 and receiver.refused == []
        # "403 Not routable" fails that message only; the gateway stays in service.
        with pytest.raises(GatewayPermanentError) as refused:
            await gw.submit(out(4, "Hello", to="+15550100"))
        assert refused.value.reason == "no_route" and gw.healthy
        await gw.submit(out(5, "Hello again"))
    finally:
        await gw.close()


async def test_agent_kannel_preset_with_immediate_sendsms_reply(
        tmp_path: Path, agent_side: tuple[FlakyReceiver, str]) -> None:
    receiver, base = agent_side
    receiver.refusals = 0
    async for p in _peer(tmp_path, {"smsbox": {"immediate-sendsms-reply": "true"}}):
        gw, inbox = await kannel_gateway(p, receiver, base)
        try:
            status, text = await sendsms(p.kannel, "probe")
            assert (status, text) == (202, "Sent.")
            result = await gw.submit(out(1, "Hello"))
            assert result.segments == 1 and gw.healthy
            await inbox.wait(lambda: any(r.state is ReceiptState.DELIVERED
                                         for r in inbox.receipts), timeout=10)
        finally:
            await gw.close()
