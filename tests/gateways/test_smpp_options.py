"""SMPP options operators require, against the simulator on loopback: addresses typed from the
sender, validity from max_age, transmitter/receiver and several binds, TLS, message_payload."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_http_gateway import Inbox

from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.client import SmppGateway
from agent.gateways.smpp.config import SmppConfig
from agent.gateways.smpp.sm import relative_validity, sender_address
from agent.models import OutboundSms, ReceiptState
from agent.sim.core import FaultConfig, SimCore
from agent.sim.smpp import SmppServer
from devkit.harness import until

SYSTEM_ID, PASSWORD = "aftercall", "s3cr3tpw"
FAST: dict[str, Any] = dict(response_timeout=2.0, bind_timeout=2.0, backoff=(0.05, 0.2),
                            enquire_link_interval=None)


class Smsc:
    def __init__(self, server: SmppServer) -> None:
        self.server, self.core = server, server.core
        self.made: list[SmppGateway] = []

    async def gateway(self, **kw: Any) -> tuple[SmppGateway, Inbox]:
        gw = SmppGateway("smsc", "127.0.0.1", self.server.port, SYSTEM_ID, PASSWORD,
                         **{**FAST, **kw})
        inbox = Inbox()
        await gw.start(inbox.on_receipt, inbox.on_inbound)
        self.made.append(gw)
        await gw.wait_ready(5.0)
        return gw, inbox


async def _smsc(tls: ssl.SSLContext | None = None) -> AsyncIterator[Smsc]:
    core = SimCore(FaultConfig(receipt_delay=0.01), seed=3)
    server = SmppServer(core, system_id=SYSTEM_ID, password=PASSWORD, ssl=tls)
    await server.start()
    smsc = Smsc(server)
    try:
        yield smsc
    finally:
        for gw in smsc.made:
            await gw.close()
        await server.close()


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async for s in _smsc():
        yield s


def sms(i: int = 1, sender: str = "ACMECO", **kw: Any) -> OutboundSms:
    return OutboundSms(message_id=f"m{i}", to="+919812345678", sender=sender,
                       text=kw.pop("text", "Your ticket is logged."), **kw)


@pytest.mark.parametrize(("sender", "addr", "ton", "npi"), [
    ("ACMECO", "ACMECO", 5, 0), ("56767", "56767", 3, 0), ("+919812345678", "919812345678", 1, 1),
    ("919812345678", "919812345678", 1, 1),
])
async def test_source_ton_npi_follow_the_sender(smsc: Smsc, sender: str, addr: str, ton: int,
                                                npi: int) -> None:
    gw, _ = await smsc.gateway()
    await gw.submit(sms(sender=sender))
    [pdu] = smsc.server.submitted
    assert (pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi) == (addr, ton, npi)
    assert sender_address(sender) == (addr, ton, npi)


async def test_configured_ton_npi_override_the_guess(smsc: Smsc) -> None:
    gw, _ = await smsc.gateway(source_addr_ton=0, source_addr_npi=0)
    await gw.submit(sms(sender="56767"))
    [pdu] = smsc.server.submitted
    assert (pdu.source_addr_ton, pdu.source_addr_npi) == (0, 0)


async def test_validity_period_comes_from_max_age(smsc: Smsc) -> None:
    gw, _ = await smsc.gateway()
    await gw.submit(sms(expires_at=datetime.now(UTC) + timedelta(minutes=15)))
    await gw.submit(sms(2))
    first, second = smsc.server.submitted
    # Relative "YYMMDDhhmmss000R": 14 min 5x s left of the 15 the rule allows.
    assert first.validity_period.startswith("00000000") and first.validity_period.endswith("000R")
    assert 14 * 60 <= int(first.validity_period[8:10]) * 60 + int(first.validity_period[10:12]) <= 900
    assert second.validity_period == ""  # no max_age: the SMSC's default
    assert relative_validity(2 * 86400 + 3723) == "000002010203000R"
    assert relative_validity(5) == "000000000100000R"  # never less than a minute


async def test_transmitter_bind_only_sends(smsc: Smsc) -> None:
    gw, _ = await smsc.gateway(bind="transmitter")
    await gw.submit(sms())
    assert [c.bound for c in smsc.server.sessions] == [P.BindTransmitter]
    assert len(smsc.core.messages) == 1


async def test_split_binds_send_on_tx_and_take_receipts_on_rx(smsc: Smsc) -> None:
    gw, inbox = await smsc.gateway(bind="split", binds=2)
    await until(lambda: len(smsc.server.sessions) == 3, 5)
    kinds = sorted(c.bound.__name__ for c in smsc.server.sessions if c.bound)
    assert kinds == ["BindReceiver", "BindTransmitter", "BindTransmitter"]
    results = [await gw.submit(sms(i)) for i in range(4)]
    # Round robin over the two transmitters.
    tx = [c for c in smsc.server.sessions if c.bound is P.BindTransmitter]
    assert sorted(c.submits for c in tx) == [2, 2]
    ids = {r.smsc_ids[0] for r in results}
    await inbox.wait(lambda: {r.smsc_id for r in inbox.receipts
                              if r.state is ReceiptState.DELIVERED} == ids)
    assert gw.window == 2 * 10


async def test_message_payload_sends_one_pdu(smsc: Smsc) -> None:
    gw, _ = await smsc.gateway(message_payload=True)
    text = "x" * 400
    result = await gw.submit(sms(text=text))
    [pdu] = smsc.server.submitted
    assert pdu.short_message == b"" and pdu.message_payload is not None
    assert result.segments == 1 and smsc.core.messages[0].text == text


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "smsc.pem", d / "smsc.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_tls_bind_to_a_tls_smsc(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async for smsc in _smsc(server_ctx):
        cfg = SmppConfig(type="smpp", host="127.0.0.1", port=smsc.server.port,
                         system_id=SYSTEM_ID, password=PASSWORD, tls=True, tls_ca=str(cert))
        gw = SmppGateway.from_config("smsc", cfg, **FAST)
        smsc.made.append(gw)
        inbox = Inbox()
        await gw.start(inbox.on_receipt, inbox.on_inbound)
        await gw.wait_ready(5.0)
        result = await gw.submit(sms())
        await inbox.wait(lambda: any(r.smsc_id == result.smsc_ids[0] and r.state.final
                                     for r in inbox.receipts))
        # Without the CA the certificate is refused: the bind never happens.
        bad = SmppGateway.from_config("smsc", cfg.model_copy(update={"tls_ca": None}), **FAST)
        smsc.made.append(bad)
        await bad.start(inbox.on_receipt, inbox.on_inbound)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            await bad.wait_ready(5.0)


async def test_the_carried_encoding_is_used_and_a_wrong_one_refused(smsc: Smsc) -> None:
    gw, _ = await smsc.gateway()
    await gw.submit(sms(text="Hello", encoding="UCS-2", segments=1))
    [pdu] = smsc.server.submitted
    assert pdu.data_coding == 0x08  # as worked out when rendered, not guessed again
    from agent.errors import GatewayPermanentError

    with pytest.raises(GatewayPermanentError) as bad:
        await gw.submit(sms(2, text="नमस्ते", encoding="GSM-7"))
    assert bad.value.reason == "invalid_message" and len(smsc.server.submitted) == 1
