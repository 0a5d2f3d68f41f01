"""SMPP 3.4 codec: byte-exact vectors, round trips, malformed input, long messages, receipts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import PduError
from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.sm import (
    ESM_UDHI,
    build_receipt_text,
    is_receipt,
    make_mo_deliver,
    make_receipt_deliver,
    make_submit_parts,
    parse_receipt_fields,
    receipt_from_deliver,
    sm_text,
    split_udh,
)
from agent.models import ReceiptState


def test_enquire_link_vector() -> None:
    raw = bytes.fromhex("00000010 00000015 00000000 00000001")
    assert P.encode(P.EnquireLink(1)) == raw
    assert P.decode(raw) == P.EnquireLink(1)
    assert P.encode(P.EnquireLinkResp(7)) == bytes.fromhex("00000010800000150000000000000007")


def test_bind_transceiver_vector() -> None:
    pdu = P.BindTransceiver(2, system_id="smppclient1", password="password",
                            system_type="", addr_ton=0, addr_npi=0)
    expected = (
        bytes.fromhex("0000002a 00000009 00000000 00000002")
        + b"smppclient1\0password\0\0" + bytes((0x34, 0, 0)) + b"\0"
    )
    assert P.encode(pdu) == expected
    assert P.decode(expected) == pdu


def test_bind_repr_hides_password() -> None:
    pdu = P.BindTransceiver(1, system_id="acme", password="s3cret")
    assert "s3cret" not in repr(pdu) and "acme" in repr(pdu)


def test_submit_sm_vector() -> None:
    pdu = P.SubmitSm(5, source_addr_ton=5, source_addr="ACME", dest_addr_ton=1, dest_addr_npi=1,
                     destination_addr="919812345678", registered_delivery=1,
                     short_message=b"Hi", tlvs=((P.Tag.DLT_TEMPLATE_ID, b"1107\0"),))
    raw = P.encode(pdu)
    body = (
        b"\0" + bytes((5, 0)) + b"ACME\0" + bytes((1, 1)) + b"919812345678\0"
        + bytes((0, 0, 0)) + b"\0\0" + bytes((1, 0, 0, 0)) + bytes((2,)) + b"Hi"
        + bytes.fromhex("1401 0005") + b"1107\0"
    )
    assert raw[16:] == body
    assert P.peek_header(raw) == (16 + len(body), 4, 0, 5)
    assert P.decode(raw) == pdu


ALL_SAMPLES: list[P.Pdu] = [
    P.GenericNack(9, P.ESME_RINVCMDID),
    P.EnquireLink(1), P.EnquireLinkResp(1), P.Unbind(2), P.UnbindResp(2),
    P.BindTransmitter(3, system_id="a", password="b", system_type="c", address_range="^91"),
    P.BindReceiver(3, system_id="a", password="b"),
    P.BindTransceiver(3, system_id="x" * 15, password="p" * 8, system_type="t" * 12),
    P.BindTransmitterResp(3, system_id="SMSC"),
    P.BindReceiverResp(3, system_id="SMSC", tlvs=(P.tlv_u8(P.Tag.SC_INTERFACE_VERSION, 0x34),)),
    P.BindTransceiverResp(3, P.ESME_RINVPASWD),
    P.SubmitSm(4, short_message=b"x" * 254, tlvs=(
        P.tlv_u16(P.Tag.USER_MESSAGE_REFERENCE, 77), P.tlv_u16(P.Tag.SAR_MSG_REF_NUM, 3),
        P.tlv_u8(P.Tag.SAR_TOTAL_SEGMENTS, 2), P.tlv_u8(P.Tag.SAR_SEGMENT_SEQNUM, 1),
        (0x1400, b"PE"), (P.Tag.MESSAGE_PAYLOAD, b""),
    )),
    P.SubmitSmResp(4, message_id="abc123"),
    P.SubmitSmResp(4, P.ESME_RTHROTTLED),
    P.DeliverSm(5, esm_class=4, tlvs=(P.tlv_cstr(P.Tag.RECEIPTED_MESSAGE_ID, "ff"),
                                      P.tlv_u8(P.Tag.MESSAGE_STATE, 2))),
    P.DeliverSmResp(5),
]


@pytest.mark.parametrize("pdu", ALL_SAMPLES, ids=lambda p: type(p).__name__)
def test_round_trip_every_pdu(pdu: P.Pdu) -> None:
    assert P.decode(P.encode(pdu)) == pdu


def test_tlv_accessors() -> None:
    sm = ALL_SAMPLES[11]
    assert isinstance(sm, P.SubmitSm)
    assert sm.user_message_reference == 77
    assert sm.sar == (3, 2, 1)
    assert sm.message_payload == b""
    assert sm.tlv(0x1400) == b"PE"
    dl = ALL_SAMPLES[14]
    assert isinstance(dl, P.DeliverSm)
    assert (dl.receipted_message_id, dl.message_state) == ("ff", 2)


def test_error_resp_without_body_decodes() -> None:
    raw = bytes.fromhex("00000010 80000004 00000058 00000009")
    assert P.decode(raw) == P.SubmitSmResp(9, P.ESME_RTHROTTLED, message_id="")
    raw = bytes.fromhex("00000010 80000009 0000000e 00000001")
    assert P.decode(raw) == P.BindTransceiverResp(1, P.ESME_RINVPASWD)


def test_unknown_command_is_returned_not_raised() -> None:
    raw = bytes.fromhex("00000014 00000103 00000000 0000002a 01020304")
    pdu = P.decode(raw)
    assert isinstance(pdu, P.UnknownPdu)
    assert (pdu.sequence, pdu.raw_command_id, pdu.body) == (42, 0x103, b"\x01\x02\x03\x04")


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (P.BindTransceiver(1, system_id="x" * 16), "system_id"),
        (P.BindTransceiver(1, password="p" * 9), "password"),
        (P.SubmitSm(1, destination_addr="9" * 21), "destination_addr"),
        (P.SubmitSm(1, short_message=b"x" * 255), "short_message"),
        (P.SubmitSm(1, esm_class=256), "esm_class"),
        (P.SubmitSmResp(1, message_id="x" * 65), "message_id"),
        (P.SubmitSm(1, source_addr="€"), "source_addr"),
    ],
)
def test_encode_refuses_bad_fields(pdu: P.Pdu, field: str) -> None:
    with pytest.raises(PduError) as exc:
        P.encode(pdu)
    assert exc.value.field == field
    assert field in str(exc.value)


def test_truncated_pdus_name_the_field() -> None:
    raw = P.encode(P.SubmitSm(1, source_addr="ACME", destination_addr="9198", short_message=b"hi"))
    seen: set[str | None] = set()
    for cut in range(16, len(raw)):
        frame = bytearray(raw[:cut])
        frame[0:4] = cut.to_bytes(4, "big")  # consistent length: the body itself is short
        with pytest.raises(PduError) as exc:
            P.decode(bytes(frame))
        assert exc.value.command == "submit_sm"
        seen.add(exc.value.field)
    assert {"service_type", "destination_addr", "sm_length", "short_message"} <= seen


def test_length_mismatch_and_short_header() -> None:
    with pytest.raises(PduError, match="command_length"):
        P.decode(bytes.fromhex("00000011 00000015 00000000 00000001"))
    with pytest.raises(PduError, match="header"):
        P.decode(b"\0\0\0\x10\0")
    with pytest.raises(PduError, match="trailing"):
        P.decode(bytes.fromhex("00000011 00000015 00000000 00000001 00"))


def test_reader_frames_across_arbitrary_chunks() -> None:
    stream = b"".join(P.encode(p) for p in ALL_SAMPLES)
    for chunk in (1, 3, 16, 17, 1000):
        reader = P.PduReader()
        out: list[P.Pdu] = []
        for i in range(0, len(stream), chunk):
            out += reader.feed_pdus(stream[i:i + chunk])
        assert out == ALL_SAMPLES
        assert reader.buffered == 0


@pytest.mark.parametrize("length", [0, 15, P.MAX_PDU_LEN + 1, 0xFFFFFFFF])
def test_reader_rejects_insane_lengths(length: int) -> None:
    with pytest.raises(PduError) as exc:
        P.PduReader().feed(length.to_bytes(4, "big") + b"\0" * 12)
    assert exc.value.field == "command_length"


def test_classify_status() -> None:
    assert P.classify_status(P.ESME_ROK) == "ok"
    for s in (P.ESME_RTHROTTLED, P.ESME_RMSGQFUL, P.ESME_RSYSERR):
        assert P.classify_status(s) == "retry"
    for s in (P.ESME_RINVDSTADR, P.ESME_RBINDFAIL, P.ESME_RINVPASWD, 0x0400, 0xFFFF):
        assert P.classify_status(s) == "permanent"
    assert P.status_name(0x58) == "ESME_RTHROTTLED"
    assert P.status_name(0x401) == "0x00000401"


# -- hypothesis ------------------------------------------------------------------------------------
def _cstr(max_len: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=max_len - 1)


_u8 = st.integers(0, 255)
_u32 = st.integers(0, 0xFFFFFFFF)
_tlvs = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=4).map(tuple)

_sm_kwargs = dict(
    sequence=_u32, command_status=_u32, service_type=_cstr(6), source_addr_ton=_u8,
    source_addr_npi=_u8, source_addr=_cstr(21), dest_addr_ton=_u8, dest_addr_npi=_u8,
    destination_addr=_cstr(21), esm_class=_u8, protocol_id=_u8, priority_flag=_u8,
    schedule_delivery_time=_cstr(17), validity_period=_cstr(17), registered_delivery=_u8,
    replace_if_present_flag=_u8, data_coding=_u8, sm_default_msg_id=_u8,
    short_message=st.binary(max_size=254), tlvs=_tlvs,
)
_any_pdu = st.one_of(
    st.builds(P.SubmitSm, **_sm_kwargs),
    st.builds(P.DeliverSm, **_sm_kwargs),
    st.builds(P.BindTransceiver, sequence=_u32, system_id=_cstr(16), password=_cstr(9),
              system_type=_cstr(13), interface_version=_u8, addr_ton=_u8, addr_npi=_u8,
              address_range=_cstr(41)),
    st.builds(P.BindTransmitterResp, sequence=_u32, command_status=st.just(0),
              system_id=_cstr(16), tlvs=_tlvs),
    st.builds(P.SubmitSmResp, sequence=_u32, command_status=st.just(0), message_id=_cstr(65)),
    st.builds(P.EnquireLink, sequence=_u32),
    st.builds(P.GenericNack, sequence=_u32, command_status=_u32),
)


@settings(max_examples=200)
@given(_any_pdu)
def test_hypothesis_round_trip(pdu: P.Pdu) -> None:
    assert P.decode(P.encode(pdu)) == pdu


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_pdu_error(data: bytes) -> None:
    try:
        P.decode(data)
    except PduError:
        pass
    reader = P.PduReader()
    try:
        for frame in reader.feed(data):
            try:
                P.decode(frame)
            except PduError:
                pass
    except PduError:
        pass


@settings(max_examples=200)
@given(_any_pdu, st.data())
def test_mutated_valid_pdus_raise_only_pdu_error(pdu: P.Pdu, data: st.DataObject) -> None:
    raw = bytearray(P.encode(pdu))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(4, len(raw) - 1)) if len(raw) > 4 else 0
        raw[i] = data.draw(_u8)
    try:
        P.decode(bytes(raw))
    except PduError:
        pass


# -- long messages, UDH, receipts ------------------------------------------------------------------
def _reassemble(parts: list[P.SubmitSm]) -> str:
    texts = {}
    for p in parts:
        concat, text = sm_text(P.decode(P.encode(dataclasses.replace(p, sequence=1))))  # type: ignore[arg-type]
        texts[concat[2] if concat else 1] = text
    return "".join(texts[i] for i in sorted(texts))


def test_make_submit_parts_single() -> None:
    (part,) = make_submit_parts(source_addr="ACME", destination_addr="919812345678",
                                text="Hi €", ref=1)
    assert part.esm_class == 0 and part.data_coding == 0
    assert part.short_message == b"Hi \x1b\x65"


def test_make_submit_parts_long_ucs2() -> None:
    text = "Привет, мир! 😀 " * 12
    parts = make_submit_parts(source_addr="ACME", destination_addr="9198", text=text, ref=300,
                              tlvs=((0x1401, b"T1"),))
    assert len(parts) > 1
    for i, p in enumerate(parts, start=1):
        assert p.esm_class & ESM_UDHI and p.data_coding == 8
        assert p.short_message[:6] == bytes((5, 0, 3, 300 & 0xFF, len(parts), i))
        assert len(p.short_message) <= 140
        assert p.tlv(0x1401) == b"T1"
    assert _reassemble(parts) == text


def test_make_submit_parts_euro_at_boundary() -> None:
    text = "a" * 152 + "€" + "b" * 20
    parts = make_submit_parts(source_addr="ACME", destination_addr="9198", text=text, ref=7)
    assert len(parts) == 2
    assert parts[0].short_message.endswith(b"a")  # no lone escape at the end of part one
    assert parts[1].short_message[6:8] == b"\x1b\x65"
    assert _reassemble(parts) == text


def test_split_udh_errors() -> None:
    assert split_udh(0x40, bytes((6, 8, 4, 1, 2, 3, 1)) + b"x") == ((0x0102, 3, 1), b"x")
    with pytest.raises(PduError, match="udh"):
        split_udh(0x40, bytes((9, 0, 3)))
    with pytest.raises(PduError, match="udh"):
        split_udh(0x40, b"")


def test_receipt_text_round_trip() -> None:
    t = datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
    text = build_receipt_text(smsc_id="0000ABCD", stat="UNDELIV", err="001", submitted=t,
                              done=t, text="Hello there, your ticket")
    assert text == ("id:0000ABCD sub:001 dlvrd:000 submit date:2403011030 done date:2403011030 "
                    "stat:UNDELIV err:001 text:Hello there, your ti")
    fields = parse_receipt_fields(text)
    assert fields["id"] == "0000ABCD" and fields["stat"] == "UNDELIV"
    assert fields["submit date"] == "2403011030" and fields["text"] == "Hello there, your ti"


@pytest.mark.parametrize(
    ("stat", "state"),
    [("DELIVRD", ReceiptState.DELIVERED), ("UNDELIV", ReceiptState.UNDELIVERED),
     ("EXPIRED", ReceiptState.EXPIRED), ("REJECTD", ReceiptState.REJECTED),
     ("ACCEPTD", ReceiptState.ACCEPTED), ("ENROUTE", ReceiptState.ACCEPTED),
     ("UNKNOWN", ReceiptState.UNKNOWN), ("DELETED", ReceiptState.UNDELIVERED)],
)
def test_receipt_states(stat: str, state: ReceiptState) -> None:
    t = datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
    pdu = make_receipt_deliver(smsc_id="42", stat=stat, err="000", source_addr="ACME",
                               destination_addr="9198", submitted=t, done=t)
    decoded = P.decode(P.encode(dataclasses.replace(pdu, sequence=3)))
    assert isinstance(decoded, P.DeliverSm) and is_receipt(decoded)
    r = receipt_from_deliver(decoded, gateway="smsc")
    assert (r.state, r.smsc_id, r.done_at, r.gateway) == (state, "42", t, "smsc")
    # Text only (no TLVs), as older SMSCs send it.
    bare = dataclasses.replace(decoded, tlvs=())
    assert receipt_from_deliver(bare, gateway="smsc").state == state


def test_receipt_without_id_is_an_error() -> None:
    pdu = P.DeliverSm(1, esm_class=4, short_message=b"stat:DELIVRD err:000")
    with pytest.raises(PduError, match="receipted_message_id"):
        receipt_from_deliver(pdu, gateway="smsc")


def test_mo_deliver_is_not_a_receipt() -> None:
    (pdu,) = make_mo_deliver(sender="919812345678", recipient="ACME", text="STOP")
    assert not is_receipt(pdu)
    assert sm_text(pdu) == (None, "STOP")
