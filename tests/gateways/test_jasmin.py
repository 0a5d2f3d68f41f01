"""Jasmin SMS Gateway 0.11 as a real peer (tests/gateways/jasmin_peer.py): the agent's Jasmin preset
submits to Jasmin's HTTP API, Jasmin's SMPP client connector carries it to the simulator, and the
simulator's receipts and replies come back through Jasmin's DLR and MO throwers to the agent's
webhooks. One Jasmin serves the module (it takes a few seconds to start)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from jasmin_peer import PASSWORD, USERNAME, Jasmin, running_jasmin
from structlog.testing import capture_logs
from test_http_gateway import Inbox, Receiver

from agent.dispatch import Dispatcher
from agent.errors import GatewayError, GatewayPermanentError
from agent.gateways.http import HttpGateway
from agent.gateways.presets import jasmin as preset
from agent.gateways.presets.common import HttpGatewayConfig
from agent.loop.replies import ReplyHandler
from agent.models import OutboundSms, ReceiptState
from agent.rules.loader import load_rules
from agent.sim.core import FaultConfig
from agent.sim.main import RunningSim, start_sim
from agent.sms.encoding import encode_gsm7, encode_ucs2
from agent.store.sqlite import SqliteStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

SMSC_USER, SMSC_PASSWORD = "jasmin", "jsm123"
SECRET = "jasmin-webhook-secret"
GSM_EXT = "Price: 10€ {ok} [x] ~^|\\ @£$¥"
UCS2 = "नमस्ते, आपका टिकट दर्ज है 🙏"
LONG = ("Your ticket 4521 is logged; an engineer will call you back within four hours. "
        * 5)[:400]  # 3 parts of 153 GSM-7 characters
CHAIN = "1101000000000001,1302157243747322354"
RULES = Path(__file__).parents[2] / "rules.yaml"


class RecordingReceiver(Receiver):
    """The agent's webhooks (test_http_gateway.Receiver), keeping what Jasmin posted and what it
    was answered; ``refusals`` answers the first N final receipts with a plain "OK"."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[str, dict[str, str], int, str]] = []
        self.refusals = 0

    async def _handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        if kind == "receipt" and form.get("level") == "2" and self.refusals:
            self.refusals -= 1
            self.posts.append((kind, form, 200, "OK"))
            return web.Response(text="OK")
        response = await super()._handle(request)
        assert isinstance(response.text, str)
        self.posts.append((kind, form, response.status, response.text))
        return response


@dataclass
class Peer:
    sim: RunningSim
    jasmin: Jasmin
    gw: HttpGateway
    inbox: Inbox
    receiver: RecordingReceiver

    def reset(self) -> None:
        self.sim.core.faults.outcome_mix = {"DELIVRD": 1.0}
        self.sim.core.faults.error_for = []
        self.receiver.refusals = 0


def config(url: str, base: str, **kw: object) -> HttpGatewayConfig:
    return HttpGatewayConfig(
        type="http", preset="jasmin", url=url, username=USERNAME, password=PASSWORD,
        dlt_tlvs={"dlt_entity_id": "0x1400", "dlt_template_id": "0x1401"},
        dlt_chain_id=CHAIN, max_retries=0, **kw,  # type: ignore[arg-type]
    ).bound("jasmin", base, lambda: SECRET)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Peer]:
    receiver = RecordingReceiver()
    server = TestServer(receiver.app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    sim = await start_sim(smpp_port=0, http_port=None, system_id=SMSC_USER,
                          password=SMSC_PASSWORD, faults=FaultConfig(receipt_delay=0.05), seed=5)
    workdir: Path = tmp_path_factory.mktemp("jasmin")
    try:
        # The MO connector's URL is the agent's tokened reply URL: Jasmin posts replies there.
        mo_url = config("http://unused/send", base).inbound_url()
        async with running_jasmin(workdir, sim.smpp_port, smsc_user=SMSC_USER,
                                  smsc_password=SMSC_PASSWORD, mo_url=mo_url) as jasmin:
            gw = HttpGateway(config(jasmin.send_url, base))
            inbox = Inbox()
            await gw.start(inbox.on_receipt, inbox.on_inbound)
            receiver.gateways[gw.name] = gw
            try:
                yield Peer(sim, jasmin, gw, inbox, receiver)
            finally:
                await gw.close()
    finally:
        await sim.stop()
        await server.close()


@pytest.fixture
def fresh(peer: Peer) -> Peer:
    peer.reset()
    return peer


def out(mid: str, text: str, to: str = "+919812345678") -> OutboundSms:
    return OutboundSms(message_id=mid, to=to, sender="ACMECO", text=text,
                       dlt_entity_id="1101000000000001", dlt_template_id="1107161234567890123")


def states(peer: Peer, mid: str) -> list[ReceiptState]:
    return [r.state for r in peer.inbox.receipts if r.message_id == mid]


async def test_texts_reach_the_smsc_exactly_and_receipts_come_back(fresh: Peer) -> None:
    peer = fresh
    before = len(peer.sim.core.messages)
    ids = {}
    for mid, text in (("e1", GSM_EXT), ("e2", UCS2), ("e3", LONG)):
        result = await peer.gw.submit(out(mid, text))
        [ids[mid]] = result.smsc_ids  # Jasmin's message id, from 'Success "<id>"'
    await peer.sim.core.wait_for_messages(before + 3, 20)
    got = {m.text: m for m in peer.sim.core.messages[before:]}
    assert set(got) == {GSM_EXT, UCS2, LONG}  # every character arrived as sent
    assert got[LONG].parts == 3 and got[GSM_EXT].parts == 1 and got[UCS2].parts == 1
    # The octets on the wire: GSM 03.38 septets (extension characters escaped) with
    # data_coding 0, UTF-16 (the emoji a surrogate pair) with data_coding 8.
    wire = {(pdu.data_coding, pdu.short_message) for pdu in peer.sim.smpp.submitted}
    assert (0x00, encode_gsm7(GSM_EXT)) in wire and (0x08, encode_ucs2(UCS2)) in wire
    for m in got.values():  # the DLT ids as the operator's TLVs, on every part
        assert m.tlvs[0x1400] == b"1101000000000001"
        assert m.tlvs[0x1401] == b"1107161234567890123"
        assert m.tlvs[0x1402] == CHAIN.encode()
    await peer.inbox.wait(lambda: all(ReceiptState.DELIVERED in states(peer, m) for m in ids),
                          timeout=20)
    for mid, jid in ids.items():
        final = [r for r in peer.inbox.receipts
                 if r.message_id == mid and r.state is ReceiptState.DELIVERED]
        assert final and all(r.smsc_id == jid for r in final)
    # Jasmin asks a receipt for the last part of a long text only: one for the three parts.
    assert len([r for r in peer.inbox.receipts if r.message_id == "e3"
                and r.state is ReceiptState.DELIVERED]) == 1
    # Every callback was acknowledged with exactly Jasmin's ACK and nothing was refused.
    assert peer.receiver.refused == []
    assert all(status == 200 and body == preset.ACK for _, _, status, body in peer.receiver.posts)


async def test_failures_come_back_as_the_message_state(fresh: Peer) -> None:
    peer = fresh
    # The handset was unreachable: the SMSC's final receipt says UNDELIV.
    peer.sim.core.faults.outcome_mix = {"UNDELIV": 1.0}
    await peer.gw.submit(out("f1", "Hello"))
    await peer.inbox.wait(lambda: ReceiptState.UNDELIVERED in states(peer, "f1"), timeout=20)
    # The SMSC refused the submit itself (invalid destination): Jasmin has already answered
    # the agent 'Success', so the refusal comes as a level-1 receipt with the SMPP status.
    peer.sim.core.faults.error_for = [("7000000000$", 0x0B)]  # ESME_RINVDSTADR
    await peer.gw.submit(out("f2", "Hello", to="+917000000000"))
    await peer.inbox.wait(lambda: ReceiptState.REJECTED in states(peer, "f2"), timeout=20)
    [rejected] = [r for r in peer.inbox.receipts if r.message_id == "f2"]
    assert "ESME_RINVDSTADR" in str(rejected.raw)


async def test_a_receipt_not_acknowledged_is_thrown_again(fresh: Peer) -> None:
    """Jasmin resends a DLR until the answer is exactly "ACK/Jasmin" (retry_delay 1 s here)."""
    peer = fresh
    peer.receiver.refusals = 1
    await peer.gw.submit(out("a1", "Hello"))
    await peer.inbox.wait(lambda: ReceiptState.DELIVERED in states(peer, "a1"), timeout=20)
    answered = [(status, body) for kind, form, status, body in peer.receiver.posts
                if kind == "receipt" and form.get("level") == "2"
                and any(r.message_id == "a1" and r.smsc_id == form.get("id")
                        for r in peer.inbox.receipts)]
    assert answered[0] == (200, "OK") and answered[-1] == (200, preset.ACK)
    assert peer.receiver.refusals == 0


async def test_wrong_password_is_a_clear_error_without_the_secret(fresh: Peer) -> None:
    peer = fresh
    wrong = "WrOnG-pw9"
    cfg = config(peer.jasmin.send_url, "http://127.0.0.1:9")
    cfg = cfg.model_copy(update={"password": type(cfg.password)(wrong)})  # type: ignore[misc]
    gw = HttpGateway(cfg)
    inbox = Inbox()
    await gw.start(inbox.on_receipt, inbox.on_inbound)
    try:
        with capture_logs() as logs, pytest.raises(GatewayError) as failed:
            await gw.submit(out("w1", "Hello"))
    finally:
        await gw.close()
    err = failed.value
    assert isinstance(err, GatewayPermanentError) and err.code == 403
    assert "Authentication failure" in str(err)
    assert wrong not in str(err) and wrong not in repr(logs)
    assert wrong not in peer.jasmin.logs_text()  # Jasmin logs the password only at DEBUG


async def test_a_stop_reply_opts_the_caller_out(fresh: Peer, tmp_path: Path) -> None:
    peer = fresh
    delivered = await peer.sim.core.inject_mo("+919812345678", "ACMECO", "STOP")
    assert delivered >= 1
    await peer.inbox.wait(lambda: any(m.text == "STOP" for m in peer.inbox.inbound), timeout=20)
    [mo] = [m for m in peer.inbox.inbound if m.text == "STOP"]
    # The agent's reply handling, on a real store: Jasmin gives the SMSC's source_addr
    # (no "+"), and the opt-out lands on the caller's E.164 number.
    rules = load_rules(RULES, env={})
    async with SqliteStore(tmp_path / "aftercall.db") as store:
        handler = ReplyHandler(store, rules, Dispatcher(store, {}).submit_now)
        outcome = await handler.handle(mo)
        assert (outcome.keyword, outcome.action) == ("STOP", "opt_out")
        assert await store.is_opted_out("+919812345678")
    posted = [(status, body) for kind, _, status, body in peer.receiver.posts if kind == "inbound"]
    assert posted and all(answer == (200, preset.ACK) for answer in posted)


@pytest.mark.parametrize("text", ["रोकें STOP 🙏", "Stop @ £5 {ok} ~"])
async def test_replies_reach_the_agent_whole(fresh: Peer, text: str) -> None:
    """UCS-2 and GSM 03.38 replies (Jasmin posts the raw octets and the data_coding as a raw
    octet: only 'binary' decoded by that coding gives the text)."""
    peer = fresh
    await peer.sim.core.inject_mo("+919812345678", "ACMECO", text)
    await peer.inbox.wait(lambda: text in [m.text for m in peer.inbox.inbound], timeout=20)


async def test_a_user_over_its_throughput_quota_is_retried_not_failed(fresh: Peer) -> None:
    """Jasmin refuses a user's burst over its http_throughput quota with the same 403 as a bad
    login; the preset takes it as throttling: the messages wait and go."""
    peer = fresh
    out_ = await peer.jasmin.jcli(
        "user -a", "username burst", "password bpw2024", "gid customers", "uid u2",
        "mt_messaging_cred quota http_throughput 2", "ok")
    assert "Successfully added" in out_, out_
    cfg = config(peer.jasmin.send_url, "http://127.0.0.1:9").model_copy(update={
        "username": "burst", "password": type(peer.gw.config.password)("bpw2024"),
        "max_retries": 6, "backoff": (0.2, 0.6)})
    gw = HttpGateway(cfg)
    inbox = Inbox()
    await gw.start(inbox.on_receipt, inbox.on_inbound)
    try:
        with capture_logs() as logs:
            results = await asyncio.gather(*(gw.submit(out(f"q{i}", "Hello")) for i in range(3)))
        assert all(r.smsc_ids for r in results) and gw.healthy
    finally:
        await gw.close()
    assert any(e["event"] == "http_submit_retried" for e in logs)  # Jasmin did refuse some
