"""India DLT's PE-TM chain on every gateway kind: the SMPP TLV (0x1402 unless tlvs says), Kannel's
meta-data, Jasmin's custom TLV, the generic preset's placeholder; bad values and clashes
refused by the model check and run share."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from agent.gateways.config import GatewayConfig
from agent.gateways.presets import generic, kannel
from agent.gateways.presets.common import HttpGatewayConfig
from agent.gateways.smpp.client import SmppGateway
from agent.models import OutboundSms
from agent.sim.main import RunningSim

CHAIN = "1101456789012345678,1302157243747322354"
HASHED = "a" * 64
GATEWAY: TypeAdapter[Any] = TypeAdapter(GatewayConfig)


def sms(**kw: Any) -> OutboundSms:
    return OutboundSms(message_id="m1", to="+919812345678", sender="ACMECO", text="Hi", **kw)


async def test_smpp_sends_the_chain_on_0x1402_or_the_operators_tag(
        sim: RunningSim, make_gateway: Any) -> None:
    gw, _ = await make_gateway(dlt_chain_id=CHAIN)
    await gw.submit(sms(dlt_entity_id="1101456789012345678", dlt_template_id="1107161234567890123"))
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert msg.tlvs[0x1402] == CHAIN.encode()
    assert msg.tlvs[0x1400] == b"1101456789012345678"
    other, _ = await make_gateway(dlt_chain_id=HASHED, dlt_tlvs={"dlt_chain_id": 0x1500})
    await other.submit(sms())
    (_, second) = await sim.core.wait_for_messages(2, timeout=5)
    assert second.tlvs[0x1500] == HASHED.encode() and 0x1402 not in second.tlvs


def test_the_smpp_model_carries_it_to_the_driver_and_refuses_bad_ones() -> None:
    cfg = GATEWAY.validate_python({"type": "smpp", "host": "h", "system_id": "x",
                                   "dlt_chain_id": CHAIN, "tlvs": {"dlt_chain_id": "0x1403"}})
    gw = SmppGateway.from_config("smsc", cfg)
    assert gw._shape.dlt_chain == (0x1403, CHAIN.encode())  # noqa: SLF001 - what submit sends
    for bad, says in [({"dlt_chain_id": "1101456789012345678"}, "dlt_chain_id"),  # no TM
                      ({"dlt_chain_id": "11,13"}, "dlt_chain_id"),
                      ({"dlt_chain_id": CHAIN, "tlvs": {"dlt_entity_id": "0x1402"}},
                       "two DLT values on one TLV tag")]:
        with pytest.raises(ValidationError) as exc:
            GATEWAY.validate_python({"type": "smpp", "host": "h", "system_id": "x", **bad})
        assert says in str(exc.value)


def test_http_presets_put_it_where_each_reads_it() -> None:
    k = HttpGatewayConfig(preset="kannel", url="http://k/cgi-bin/sendsms", username="u",
                          password="p", dlt_chain_id=CHAIN,
                          dlt_tlvs={"dlt_entity_id": "PE_ID", "dlt_chain_id": "TM_CHAIN"})
    meta = kannel.meta_data(k, sms(dlt_entity_id="1101456789012345678"))
    assert meta == f"?smpp?TM_CHAIN={CHAIN.replace(',', '%2C')}&PE_ID=1101456789012345678"
    g = HttpGatewayConfig(preset="generic", url="http://g/send",
                          request_template={"to": "{to}", "chain": "{dlt_chain_id}"},
                          dlt_chain_id=HASHED)
    assert generic.template_values(g, sms())["dlt_chain_id"] == HASHED
    for bad, says in [
        (dict(preset="kannel", url="http://k/", username="u", password="p", dlt_chain_id=CHAIN),
         "dlt_tlvs.dlt_chain_id"),
        (dict(preset="generic", url="http://g/", request_template={"to": "{to}"},
              dlt_chain_id=CHAIN), "{dlt_chain_id}"),
        (dict(preset="twilio", account_sid="AC1", auth_token="t", dlt_chain_id=CHAIN),
         "does not use dlt_chain_id"),
    ]:
        with pytest.raises(ValidationError) as exc:
            HttpGatewayConfig(**bad)  # type: ignore[arg-type]
        assert says in str(exc.value), str(exc.value)
