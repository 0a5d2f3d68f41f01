"""The simulator against an independent SMPP client (smpplib), plus its core and control API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm

from agent.gateways.smpp import pdu as P
from agent.sim.core import ESME_RTHROTTLED, FaultConfig, SimCore, read_record
from agent.sim.main import RunningSim, apply_faults, start_sim

SYSTEM_ID = "aftercall"
PASSWORD = "s3cr3tpw"  # the one tests/gateways/conftest.py gives the simulator


def _smpplib_session(port: int, text: str, dest: str) -> dict[str, Any]:
    """Blocking: bind, submit (split by smpplib itself), read until every part has a receipt."""
    sent: list[Any] = []
    received: list[Any] = []
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    client.set_message_sent_handler(lambda pdu: sent.append(pdu))
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    client.connect()
    try:
        client.bind_transceiver(system_id=SYSTEM_ID, password=PASSWORD)
        parts, coding, esm_class = smpplib.gsm.make_parts(text)
        for part in parts:
            client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="INDEP",
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL, destination_addr=dest,
                short_message=part, data_coding=coding, esm_class=esm_class,
                registered_delivery=True,
            )
        while len(sent) < len(parts) or len(received) < len(parts):
            client.read_once(auto_send_enquire_link=False)
        client.unbind()
    finally:
        client.disconnect()
    return {
        "ids": [p.message_id.decode() for p in sent],
        "receipts": [(p.receipted_message_id, p.short_message) for p in received],
        "parts": len(parts),
    }


async def test_smpplib_binds_submits_and_gets_receipts(sim: RunningSim) -> None:
    text = "Independent client check: " + "x" * 150  # two parts by smpplib's own splitting
    out = await asyncio.wait_for(
        asyncio.to_thread(_smpplib_session, sim.smpp_port, text, "919812345678"), 20
    )
    assert out["parts"] == 2
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert (msg.text, msg.source, msg.dest, msg.parts) == (text, "INDEP", "919812345678", 2)
    assert sorted(out["ids"]) == sorted(
        rid.decode().rstrip("\0") for rid, _ in out["receipts"]
    )
    for _, body in out["receipts"]:
        assert b"stat:DELIVRD" in body and b"err:000" in body


async def test_smpplib_ucs2(sim: RunningSim) -> None:
    text = "Привет 😀"
    out = await asyncio.wait_for(
        asyncio.to_thread(_smpplib_session, sim.smpp_port, text, "919812345678"), 20
    )
    assert out["parts"] == 1
    (msg,) = await sim.core.wait_for_messages(1, timeout=5)
    assert msg.text == text


def _bind_with(port: int, password: str) -> int:
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    client.connect()
    try:
        client.bind_transmitter(system_id=SYSTEM_ID, password=password)
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    finally:
        client.disconnect()
    return 0


async def test_smpplib_wrong_password_refused(sim: RunningSim) -> None:
    assert await asyncio.to_thread(_bind_with, sim.smpp_port, "nope") == P.ESME_RINVPASWD
    assert await asyncio.to_thread(_bind_with, sim.smpp_port, PASSWORD) == 0


async def _raw(port: int, *pdus: P.Pdu, expect: int) -> list[P.Pdu]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for p in pdus:
            writer.write(P.encode(p))
        framer, out = P.PduReader(), []
        while len(out) < expect:
            data = await asyncio.wait_for(reader.read(4096), 5)
            assert data, "server closed early"
            out += framer.feed_pdus(data)
        return out
    finally:
        writer.close()


async def test_protocol_edges(sim: RunningSim) -> None:
    out = await _raw(
        sim.smpp_port,
        P.SubmitSm(1, destination_addr="9198"),  # not bound yet
        P.EnquireLink(2),
        P.BindTransmitter(3, system_id=SYSTEM_ID, password=PASSWORD),
        P.BindTransmitter(4, system_id=SYSTEM_ID, password=PASSWORD),
        expect=4,
    )
    assert out[0] == P.SubmitSmResp(1, P.ESME_RINVBNDSTS)
    assert out[1] == P.EnquireLinkResp(2)
    assert out[2] == P.BindTransmitterResp(3, system_id="aftercall-sim")
    assert out[3] == P.BindTransmitterResp(4, P.ESME_RALYBND)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.smpp_port)
    writer.write(bytes.fromhex("00000014 00000103 00000000 00000009 01020304"))
    framer = P.PduReader()
    resp = framer.feed_pdus(await asyncio.wait_for(reader.read(100), 5))
    assert resp == [P.GenericNack(9, P.ESME_RINVCMDID)]
    writer.close()


async def test_control_api(tmp_path: Path) -> None:
    record = tmp_path / "messages.jsonl"
    sim = await start_sim(smpp_port=0, http_port=0, system_id=SYSTEM_ID, password=PASSWORD,
                          record_path=str(record))
    try:
        sim.core.accept_part(channel="smpp", source="A", dest="9198", text="héllo", concat=None,
                             tlvs={0x1401: b"T"})
        base = f"http://127.0.0.1:{sim.control_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/sim/messages") as r:
                body = await r.json()
            assert body["count"] == 1 and body["messages"][0]["text"] == "héllo"
            faults = {"throttle_tps": 5, "drop_after": None}
            async with http.post(f"{base}/sim/faults", json=faults) as r:
                assert r.status == 200
            assert sim.core.faults.throttle_tps == 5
            async with http.post(f"{base}/sim/faults", json={"outcome_mix": {"BOGUS": 1}}) as r:
                assert r.status == 400 and "outcome_mix" in (await r.json())["error"]
            async with http.post(f"{base}/sim/faults", json={"nope": 1}) as r:
                assert r.status == 400 and "nope" in (await r.json())["error"]
            mo = {"sender": "+91", "recipient": "A", "text": "hi"}
            async with http.post(f"{base}/sim/mo", json=mo) as r:
                assert r.status == 200 and (await r.json())["listeners"] >= 1
        assert sim.smpp.mo_undelivered == 1  # nobody bound to receive it
        (rec,) = list(read_record(record))
        assert rec.text == "héllo" and rec.tlvs == {0x1401: b"T"}
    finally:
        await sim.stop()


# -- core ------------------------------------------------------------------------------------------
def test_reassembly_out_of_order_and_interleaved() -> None:
    core = SimCore()
    ids = [
        core.accept_part(channel="smpp", source="A", dest="1", text="world", concat=(7, 2, 2)),
        core.accept_part(channel="smpp", source="A", dest="2", text="other", concat=(7, 2, 1)),
        core.accept_part(channel="smpp", source="A", dest="1", text="hello ", concat=(7, 2, 1)),
    ]
    assert len(set(ids)) == 3
    assert [(m.dest, m.text, m.parts, m.smsc_id) for m in core.messages] == [
        ("1", "hello world", 2, ids[2])
    ]
    assert core.parts_received == 3


def test_admit_throttle_and_error_for() -> None:
    now = [0.0]
    core = SimCore(FaultConfig(throttle_tps=10, error_for=[(r"^9199", P.ESME_RINVDSTADR)]),
                   clock=lambda: now[0])
    assert core.admit("919912") == P.ESME_RINVDSTADR
    results = [core.admit("9198") for _ in range(15)]
    assert results.count(0) == 10 and results.count(ESME_RTHROTTLED) == 5
    now[0] += 0.5
    assert [core.admit("9198") for _ in range(6)].count(0) == 5


def test_receipt_plans() -> None:
    core = SimCore(FaultConfig(outcome_mix={"DELIVRD": 1, "UNDELIV": 1}, receipt_delay=0.1), seed=5)
    stats = {core.receipt_plan("x")[0][1] for _ in range(50)}
    assert stats == {"DELIVRD", "UNDELIV"}
    core.faults = FaultConfig(duplicate_receipts=True, out_of_order_receipts=True)
    plan = core.receipt_plan("x")
    assert [p[1] for p in plan].count("DELIVRD") == 2 and plan[-1][1] in ("ENROUTE", "DELIVRD")
    assert plan == sorted(plan, key=lambda p: p[0])
    finals = [i for i, p in enumerate(plan) if p[1] == "DELIVRD"]
    assert plan.index(next(p for p in plan if p[1] == "ENROUTE")) > finals[0]


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"throttle_tps": 0}, "throttle_tps"), ({"outcome_mix": {}}, "outcome_mix"),
     ({"error_for": [("(", 11)]}, "error_for[0]"), ({"receipt_delay": -1}, "receipt_delay")],
)
def test_fault_validation_names_field_and_rolls_back(changes: dict[str, Any], field: str) -> None:
    faults = FaultConfig()
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        apply_faults(faults, {"drop_after": 3, **changes})
    assert faults == FaultConfig()


async def test_wait_for_messages_times_out() -> None:
    with pytest.raises(TimeoutError):
        await SimCore().wait_for_messages(1, timeout=0.01)


def test_record_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    core = SimCore(record_path=str(path))
    core.accept_part(channel="http", source="S", dest="D", text="x😀", concat=None)
    line = json.loads(path.read_text(encoding="utf-8"))
    assert line["text"] == "x😀" and line["channel"] == "http"
    assert list(read_record(path)) == core.messages


async def _read_pdus(reader: asyncio.StreamReader, framer: P.PduReader, n: int) -> list[P.Pdu]:
    out: list[P.Pdu] = []
    while len(out) < n:
        out += framer.feed_pdus(await asyncio.wait_for(reader.read(4096), 5))
    return out


async def test_unacknowledged_receipt_is_offered_again_on_the_next_bind(sim: RunningSim) -> None:
    """Store and forward, as an SMSC does: a receipt the ESME never acknowledged (it died)
    comes again on its next bind, and an acknowledged one does not."""
    bind = P.BindTransceiver(1, system_id=SYSTEM_ID, password=PASSWORD)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.smpp_port)
    framer = P.PduReader()
    writer.write(P.encode(bind) + P.encode(P.SubmitSm(
        2, source_addr="ACME", destination_addr="919812345678", registered_delivery=1,
        short_message=b"hello")))
    _, submit_resp, receipt = await _read_pdus(reader, framer, 3)
    assert isinstance(receipt, P.DeliverSm)
    assert receipt.receipted_message_id == submit_resp.message_id  # type: ignore[attr-defined]
    writer.close()  # gone without deliver_sm_resp

    reader, writer = await asyncio.open_connection("127.0.0.1", sim.smpp_port)
    framer = P.PduReader()
    writer.write(P.encode(bind))
    _, again = await _read_pdus(reader, framer, 2)
    assert isinstance(again, P.DeliverSm)
    assert again.receipted_message_id == receipt.receipted_message_id
    writer.write(P.encode(P.DeliverSmResp(again.sequence)))
    await writer.drain()
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", sim.smpp_port)
    writer.write(P.encode(bind))
    [resp] = await _read_pdus(reader, P.PduReader(), 1)
    assert isinstance(resp, P.BindTransceiverResp)
    assert sim.smpp.held == [] and sim.smpp.redelivered == 1
    writer.close()


async def test_unacknowledged_receipt_goes_to_another_live_bind(sim: RunningSim) -> None:
    """Two agents bound to one account: the one that submitted dies before acknowledging its
    receipt; the other bind gets the receipt at once (nobody binds anew to flush it)."""
    bind = P.BindTransceiver(1, system_id=SYSTEM_ID, password=PASSWORD)
    other_reader, other = await asyncio.open_connection("127.0.0.1", sim.smpp_port)
    other_framer = P.PduReader()
    other.write(P.encode(bind))
    [resp] = await _read_pdus(other_reader, other_framer, 1)
    assert isinstance(resp, P.BindTransceiverResp)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.smpp_port)
    writer.write(P.encode(bind) + P.encode(P.SubmitSm(
        2, source_addr="ACME", destination_addr="919812345678", registered_delivery=1,
        short_message=b"hello")))
    _, submit_resp, receipt = await _read_pdus(reader, P.PduReader(), 3)
    assert isinstance(receipt, P.DeliverSm)
    writer.close()  # killed before its deliver_sm_resp
    [again] = await _read_pdus(other_reader, other_framer, 1)
    assert isinstance(again, P.DeliverSm)
    assert again.receipted_message_id == submit_resp.message_id  # type: ignore[attr-defined]
    assert sim.smpp.held == []
    other.close()
