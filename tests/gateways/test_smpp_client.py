"""SmppGateway against the simulator on loopback: content, receipts, MO and every failure mode."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.backoff import backoff_delay
from agent.errors import (
    GatewayAmbiguousError,
    GatewayError,
    GatewayPermanentError,
    GatewayTemporaryError,
)
from agent.gateways.base import Gateway
from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.client import BindRefused, RateLimiter, SmppGateway
from agent.models import OutboundSms, ReceiptState, SubmitResult
from agent.sim.main import RunningSim

GatewayFactory = Callable[..., Awaitable[Any]]
PASSWORD = "s3cr3tpw"  # the one tests/gateways/conftest.py gives the simulator


def sms(i: int | str, text: str, to: str = "+919812345678", **kw: object) -> OutboundSms:
    return OutboundSms(message_id=str(i), to=to, sender="ACMECO", text=text, **kw)  # type: ignore[arg-type]


async def test_is_a_gateway(make_gateway: GatewayFactory) -> None:
    gw, _ = await make_gateway()
    assert isinstance(gw, SmppGateway)
    _: Gateway = gw
    assert gw.healthy
    assert PASSWORD not in repr(gw)


async def test_long_ucs2_message_arrives_reassembled(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    gw, inbox = await make_gateway()
    text = "Спасибо за звонок! Ваш тикет № 4711 зарегистрирован. 😀 " * 4
    result = await gw.submit(sms(1, text))
    assert result.segments == len(result.smsc_ids) > 2
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert msg.text == text
    assert msg.parts == result.segments
    assert (msg.source, msg.dest, msg.smsc_id) == ("ACMECO", "919812345678", result.smsc_ids[0])
    await inbox.wait(lambda: len(inbox.receipts) == result.segments)
    assert {r.smsc_id for r in inbox.receipts} == set(result.smsc_ids)
    assert all(r.state is ReceiptState.DELIVERED and r.gateway == "smsc" for r in inbox.receipts)


async def test_gsm_euro_at_segment_boundary(sim: RunningSim, make_gateway: GatewayFactory) -> None:
    gw, _ = await make_gateway()
    text = "a" * 152 + "€" + " done [ok] ^_^ {x} ~|\\"
    result = await gw.submit(sms(2, text))
    assert result.segments == 2
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert msg.text == text


async def test_dlt_and_operator_tlvs_reach_the_smsc(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    gw, _ = await make_gateway()
    await gw.submit(sms(3, "hi", dlt_entity_id="1101", dlt_template_id="1107161234567890123",
                        tlvs={0x1500: b"\x01"}))
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert msg.tlvs[0x1400] == b"1101"
    assert msg.tlvs[0x1401] == b"1107161234567890123"
    assert msg.tlvs[0x1500] == b"\x01"


async def test_dlt_ids_go_on_the_operators_own_tlv_tags(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    # rules.yaml: tlvs: {dlt_entity_id: 0x1402, dlt_template_id: 0x1403}
    gw, _ = await make_gateway(dlt_tlvs={"dlt_entity_id": 0x1402, "dlt_template_id": 0x1403})
    await gw.submit(sms(4, "hi", dlt_entity_id="1101", dlt_template_id="1107"))
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert (msg.tlvs.get(0x1402), msg.tlvs.get(0x1403)) == (b"1101", b"1107")
    assert 0x1400 not in msg.tlvs and 0x1401 not in msg.tlvs


async def test_throttled_submits_are_retried_not_duplicated(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    sim.core.faults.throttle_tps = 40
    gw, _ = await make_gateway(window=10)
    with capture_logs() as logs:
        results = await asyncio.gather(*(gw.submit(sms(i, f"msg {i}")) for i in range(80)))
    assert all(isinstance(r, SubmitResult) for r in results)
    assert any(e["event"] == "smpp_throttled" for e in logs)
    texts = Counter(m.text for m in sim.core.messages)
    assert texts == Counter(f"msg {i}" for i in range(80))


async def test_permanent_error_names_status(sim: RunningSim, make_gateway: GatewayFactory) -> None:
    sim.core.faults.error_for = [(r"^91990", P.ESME_RINVDSTADR)]
    gw, _ = await make_gateway()
    with pytest.raises(GatewayPermanentError) as exc:
        await gw.submit(sms(4, "hello", to="+919900000000"))
    assert exc.value.code == P.ESME_RINVDSTADR
    assert exc.value.reason == "ESME_RINVDSTADR"
    assert sim.core.messages == []
    await gw.submit(sms(5, "hello"))  # the session is still fine


@pytest.mark.parametrize(
    ("password", "refuse", "status"),
    [("wrong-pw", False, "ESME_RINVPASWD"), (PASSWORD, True, "ESME_RBINDFAIL")],
)
async def test_refused_bind_is_a_clear_error(
    sim: RunningSim, make_gateway: GatewayFactory, password: str, refuse: bool, status: str
) -> None:
    sim.core.faults.refuse_bind = refuse
    gw, _ = await make_gateway(bind=False, password=password, submit_wait=0.3)
    with pytest.raises(BindRefused) as exc:
        await gw.wait_ready(5.0)
    message = str(exc.value)
    assert status in message and "aftercall" in message and password not in message
    assert not gw.healthy
    with pytest.raises(GatewayTemporaryError) as sub:
        await gw.submit(sms(6, "x"))
    assert sub.value.reason == "not_bound" and status in str(sub.value)
    assert sim.core.messages == []


async def test_nothing_listening_is_temporary() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    gw = SmppGateway("smsc", "127.0.0.1", port, "a", "b", backoff=(0.05, 0.1), submit_wait=0.3,
                     enquire_link_interval=None)
    await gw.start(_noop, _noop)
    try:
        with pytest.raises(GatewayTemporaryError) as exc:
            await gw.submit(sms(7, "x"))
        assert exc.value.reason == "not_bound"
        assert "ConnectionRefusedError" in str(exc.value)
    finally:
        await gw.close()


async def _noop(_: object) -> None:
    return None


async def test_dropped_connection_every_message_once_or_reported(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    sim.core.faults.drop_after = 3
    gw, _ = await make_gateway(window=5)
    outcomes = await asyncio.gather(*(gw.submit(sms(i, f"drop {i}")) for i in range(20)),
                                    return_exceptions=True)
    ok = {f"drop {i}" for i, o in enumerate(outcomes) if isinstance(o, SubmitResult)}
    failed = [o for o in outcomes if not isinstance(o, SubmitResult)]
    assert ok and failed
    for err in failed:
        assert isinstance(err, (GatewayAmbiguousError, GatewayTemporaryError)), err
        assert err.reason in ("connection_lost", "not_bound")
    received = Counter(m.text for m in sim.core.messages)
    assert all(n == 1 for n in received.values())  # never twice
    assert set(received) == ok  # accepted by the SMSC == reported accepted
    sim.core.faults.drop_after = None
    await gw.wait_ready(5.0)
    await gw.submit(sms(99, "after the storm"))
    assert sim.core.messages[-1].text == "after the storm"


async def test_black_hole_smsc_is_ambiguous_then_recovers(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    gw, _ = await make_gateway(response_timeout=0.3, bind_timeout=0.3, submit_wait=0.3)
    sim.core.faults.never_respond = True
    with pytest.raises(GatewayAmbiguousError) as exc:
        await gw.submit(sms(8, "into the void"))
    assert exc.value.reason == "response_timeout"
    # The session is torn down and rebinding into the black hole fails: fail fast, not hang.
    with pytest.raises(GatewayTemporaryError):
        await gw.submit(sms(9, "still void"))
    assert sim.core.messages == []
    sim.core.faults.never_respond = False
    gw._submit_wait = 5.0  # the next bind attempt comes after a short backoff
    await gw.submit(sms(10, "back"))
    assert [m.text for m in sim.core.messages] == ["back"]


async def test_receipt_outcomes_and_duplicates(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    sim.core.faults.outcome_mix = {"UNDELIV": 1.0}
    sim.core.faults.duplicate_receipts = True
    gw, inbox = await make_gateway()
    result = await gw.submit(sms(11, "x"))
    await inbox.wait(lambda: len(inbox.receipts) == 2)
    assert [r.state for r in inbox.receipts] == [ReceiptState.UNDELIVERED] * 2
    assert {r.smsc_id for r in inbox.receipts} == set(result.smsc_ids)
    assert inbox.receipts[0].error_code == "001"


async def test_mo_reply_reaches_on_inbound(sim: RunningSim, make_gateway: GatewayFactory) -> None:
    _, inbox = await make_gateway()
    assert await sim.core.inject_mo("+919812345678", "ACMECO", "STOP") == 1
    await inbox.wait(lambda: len(inbox.inbound) == 1)
    (mo,) = inbox.inbound
    assert (mo.sender, mo.recipient, mo.text) == ("+919812345678", "ACMECO", "STOP")
    assert mo.gateway == "smsc"
    await inbox.wait(lambda: sim.smpp.acked >= 1)  # deliver_sm_resp was sent


async def test_smsc_restart_rebinds(sim: RunningSim, make_gateway: GatewayFactory) -> None:
    gw, _ = await make_gateway(enquire_link_interval=0.05)
    session = gw._session
    assert session is not None
    sim.smpp.drop_all()
    await asyncio.wait_for(session.wait_closed(), 5)  # a submit before this would be ambiguous
    await gw.wait_ready(5)
    await gw.submit(sms(12, "after restart"))
    assert sim.core.messages[-1].text == "after restart"


async def test_unencodable_message_is_permanent(make_gateway: GatewayFactory) -> None:
    gw, _ = await make_gateway()
    with pytest.raises(GatewayPermanentError) as exc:
        await gw.submit(sms(13, "x", to="+" + "9" * 25))
    assert exc.value.reason == "invalid_message" and "destination_addr" in str(exc.value)


async def test_rate_limiter_holds_rate_with_fake_clock() -> None:
    now = [0.0]

    async def fake_sleep(d: float) -> None:
        now[0] += d + 0.0007  # timers overshoot; the limiter must not lose the time

    limiter = RateLimiter(200, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(2001):
        await limiter.acquire()
    assert 2000 / now[0] == pytest.approx(200, rel=0.01)


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(a, 0.5, 30, rand=rng.random) for a in range(12)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert delays[-1] >= 15 and delays[0] <= 0.5


def test_gateway_error_reasons_are_strings() -> None:
    assert GatewayError("x").reason == "error"


async def test_long_mo_reply_is_reassembled(sim: RunningSim, make_gateway: GatewayFactory) -> None:
    _, inbox = await make_gateway()
    text = "Please call me back tomorrow morning about ticket 4711, " * 5
    await sim.core.inject_mo("+919812345678", "ACMECO", text)
    await inbox.wait(lambda: len(inbox.inbound) == 1)
    assert inbox.inbound[0].text == text


async def test_keepalive_detects_a_silent_smsc(
    sim: RunningSim, make_gateway: GatewayFactory
) -> None:
    gw, _ = await make_gateway(enquire_link_interval=0.05, response_timeout=0.2)
    session = gw._session
    assert session is not None
    sim.core.faults.never_respond = True
    await asyncio.wait_for(session.wait_closed(), 5)
    assert session.close_reason == "response timeout"
    sim.core.faults.never_respond = False
    await gw.wait_ready(5)
    assert gw.healthy
