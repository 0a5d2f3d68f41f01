"""SMPP 3.4 PDU codec: bytes in and out, incremental framing, and every SMPP name; no I/O."""

from __future__ import annotations

import struct

from agent.errors import PduError
from agent.gateways.smpp.commands import (
    BindReceiver,
    BindReceiverResp,
    BindRespType,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    BindType,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
    _Bind,
    _BindResp,
    _Header,
    _Sm,
)
from agent.gateways.smpp.constants import (
    ESME_RALYBND,
    ESME_RBINDFAIL,
    ESME_RDELIVERYFAILURE,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVDSTADR,
    ESME_RINVDSTNPI,
    ESME_RINVDSTTON,
    ESME_RINVESMCLASS,
    ESME_RINVEXPIRY,
    ESME_RINVMSGID,
    ESME_RINVMSGLEN,
    ESME_RINVOPTPARAMVAL,
    ESME_RINVOPTPARSTREAM,
    ESME_RINVPARLEN,
    ESME_RINVPASWD,
    ESME_RINVREGDLVFLG,
    ESME_RINVSCHED,
    ESME_RINVSERTYP,
    ESME_RINVSRCADR,
    ESME_RINVSRCNPI,
    ESME_RINVSRCTON,
    ESME_RINVSYSID,
    ESME_RINVSYSTYP,
    ESME_RMISSINGOPTPARAM,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_ROPTPARNOTALLWD,
    ESME_RSUBMITFAIL,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    ESME_RUNKNOWNERR,
    ESME_RX_P_APPN,
    ESME_RX_R_APPN,
    ESME_RX_T_APPN,
    HEADER,
    HEADER_LEN,
    INTERFACE_VERSION,
    MAX_PDU_LEN,
    STATUS_NAMES,
    THROTTLING,
    CommandId,
    StatusClass,
    classify_status,
    command_name,
    status_name,
)
from agent.gateways.smpp.tlv import (
    Tag,
    Tlvs,
    tlv_cstr,
    tlv_get,
    tlv_int,
    tlv_str,
    tlv_u8,
    tlv_u16,
)

# Callers import every SMPP name from here (`pdu as P`), whichever module defines it: numbers in
# constants.py, TLV helpers in tlv.py, dataclasses in commands.py. _Sm is here because sm.py
# builds on the body submit_sm and deliver_sm share.
__all__ = [
    "ESME_RALYBND", "ESME_RBINDFAIL", "ESME_RDELIVERYFAILURE", "ESME_RINVBNDSTS", "ESME_RINVCMDID",
    "ESME_RINVCMDLEN", "ESME_RINVDSTADR", "ESME_RINVDSTNPI", "ESME_RINVDSTTON",
    "ESME_RINVESMCLASS", "ESME_RINVEXPIRY", "ESME_RINVMSGID", "ESME_RINVMSGLEN",
    "ESME_RINVOPTPARAMVAL", "ESME_RINVOPTPARSTREAM", "ESME_RINVPARLEN", "ESME_RINVPASWD",
    "ESME_RINVREGDLVFLG", "ESME_RINVSCHED", "ESME_RINVSERTYP", "ESME_RINVSRCADR",
    "ESME_RINVSRCNPI", "ESME_RINVSRCTON", "ESME_RINVSYSID", "ESME_RINVSYSTYP",
    "ESME_RMISSINGOPTPARAM", "ESME_RMSGQFUL", "ESME_ROK", "ESME_ROPTPARNOTALLWD",
    "ESME_RSUBMITFAIL", "ESME_RSYSERR", "ESME_RTHROTTLED", "ESME_RUNKNOWNERR", "ESME_RX_P_APPN",
    "ESME_RX_R_APPN", "ESME_RX_T_APPN", "HEADER", "HEADER_LEN", "INTERFACE_VERSION", "MAX_PDU_LEN",
    "STATUS_NAMES", "THROTTLING", "BindReceiver", "BindReceiverResp", "BindRespType",
    "BindTransceiver", "BindTransceiverResp", "BindTransmitter", "BindTransmitterResp", "BindType",
    "CommandId", "DeliverSm", "DeliverSmResp", "EnquireLink", "EnquireLinkResp", "GenericNack",
    "Pdu", "PduReader", "StatusClass", "SubmitSm", "SubmitSmResp", "Tag", "Tlvs", "Unbind",
    "UnbindResp", "UnknownPdu", "_Sm", "classify_status", "command_name", "decode", "encode",
    "peek_header", "status_name", "tlv_cstr", "tlv_get", "tlv_int", "tlv_str", "tlv_u8", "tlv_u16",
]

_HEADER_ONLY: dict[CommandId, type[_Header]] = {
    c.command_id: c for c in (GenericNack, EnquireLink, EnquireLinkResp, Unbind, UnbindResp)
}
_BINDS: dict[CommandId, BindType] = {
    c.command_id: c for c in (BindTransmitter, BindReceiver, BindTransceiver)
}
_BIND_RESPS: dict[CommandId, BindRespType] = {
    c.command_id: c for c in (BindTransmitterResp, BindReceiverResp, BindTransceiverResp)
}
_SMS: dict[CommandId, type[SubmitSm | DeliverSm]] = {
    c.command_id: c for c in (SubmitSm, DeliverSm)
}
_SM_RESPS: dict[CommandId, type[SubmitSmResp | DeliverSmResp]] = {
    c.command_id: c for c in (SubmitSmResp, DeliverSmResp)
}

# Maximum C-octet string sizes, terminating NUL included (section 4).
_MAX = {
    "system_id": 16, "password": 9, "system_type": 13, "address_range": 41, "service_type": 6,
    "source_addr": 21, "destination_addr": 21, "schedule_delivery_time": 17,
    "validity_period": 17, "message_id": 65,
}


# -- encoding -------------------------------------------------------------------------------------
def _cstr(value: str, name: str, command: str) -> bytes:
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise PduError("not representable in Latin-1", field=name, command=command) from None
    if b"\0" in raw:
        raise PduError("contains NUL", field=name, command=command)
    if len(raw) + 1 > _MAX[name]:
        raise PduError(f"longer than {_MAX[name] - 1} octets", field=name, command=command)
    return raw + b"\0"


def _u8(value: int, name: str, command: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise PduError(f"{value} does not fit one octet", field=name, command=command)
    return bytes((value,))


def _encode_tlvs(tlvs: Tlvs, command: str) -> bytes:
    out = bytearray()
    for tag, value in tlvs:
        if not 0 <= tag <= 0xFFFF or len(value) > 0xFFFF:
            raise PduError("tag or length does not fit 16 bits", field=f"tlv 0x{tag:04X}",
                           command=command)
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)


def _encode_body(pdu: Pdu, cmd: str) -> bytes:
    if isinstance(pdu, UnknownPdu):
        raise PduError("cannot encode an unknown PDU", command=cmd)
    if isinstance(pdu, _Bind):
        return b"".join((
            _cstr(pdu.system_id, "system_id", cmd), _cstr(pdu.password, "password", cmd),
            _cstr(pdu.system_type, "system_type", cmd),
            _u8(pdu.interface_version, "interface_version", cmd),
            _u8(pdu.addr_ton, "addr_ton", cmd), _u8(pdu.addr_npi, "addr_npi", cmd),
            _cstr(pdu.address_range, "address_range", cmd),
        ))
    if isinstance(pdu, _BindResp):
        return _cstr(pdu.system_id, "system_id", cmd) + _encode_tlvs(pdu.tlvs, cmd)
    if isinstance(pdu, _Sm):
        if len(pdu.short_message) > 254:
            raise PduError("longer than 254 octets; use message_payload", field="short_message",
                           command=cmd)
        return b"".join((
            _cstr(pdu.service_type, "service_type", cmd),
            _u8(pdu.source_addr_ton, "source_addr_ton", cmd),
            _u8(pdu.source_addr_npi, "source_addr_npi", cmd),
            _cstr(pdu.source_addr, "source_addr", cmd),
            _u8(pdu.dest_addr_ton, "dest_addr_ton", cmd),
            _u8(pdu.dest_addr_npi, "dest_addr_npi", cmd),
            _cstr(pdu.destination_addr, "destination_addr", cmd),
            _u8(pdu.esm_class, "esm_class", cmd), _u8(pdu.protocol_id, "protocol_id", cmd),
            _u8(pdu.priority_flag, "priority_flag", cmd),
            _cstr(pdu.schedule_delivery_time, "schedule_delivery_time", cmd),
            _cstr(pdu.validity_period, "validity_period", cmd),
            _u8(pdu.registered_delivery, "registered_delivery", cmd),
            _u8(pdu.replace_if_present_flag, "replace_if_present_flag", cmd),
            _u8(pdu.data_coding, "data_coding", cmd),
            _u8(pdu.sm_default_msg_id, "sm_default_msg_id", cmd),
            bytes((len(pdu.short_message),)), pdu.short_message,
            _encode_tlvs(pdu.tlvs, cmd),
        ))
    if isinstance(pdu, (SubmitSmResp, DeliverSmResp)):
        return _cstr(pdu.message_id, "message_id", cmd)
    return b""


def encode(pdu: Pdu) -> bytes:
    cmd = command_name(pdu.command_id)
    if not 0 <= pdu.sequence <= 0xFFFFFFFF or not 0 <= pdu.command_status <= 0xFFFFFFFF:
        raise PduError("does not fit 32 bits", field="sequence/command_status", command=cmd)
    body = _encode_body(pdu, cmd)
    return HEADER.pack(HEADER_LEN + len(body), pdu.command_id, pdu.command_status,
                       pdu.sequence) + body


# -- decoding -------------------------------------------------------------------------------------
class _Cursor:
    """Reads fields off a body; every shortfall becomes a PduError naming the field."""

    __slots__ = ("cmd", "data", "pos")

    def __init__(self, data: bytes, cmd: str) -> None:
        self.data, self.pos, self.cmd = data, 0, cmd

    def u8(self, name: str) -> int:
        if self.pos >= len(self.data):
            raise PduError("truncated: missing", field=name, command=self.cmd)
        self.pos += 1
        return self.data[self.pos - 1]

    def cstr(self, name: str) -> str:
        limit = _MAX[name]
        end = self.data.find(b"\0", self.pos, self.pos + limit)
        if end < 0:
            if len(self.data) - self.pos < limit:
                raise PduError("truncated: no NUL terminator", field=name, command=self.cmd)
            raise PduError(f"no NUL within {limit} octets", field=name, command=self.cmd)
        value = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return value

    def raw(self, n: int, name: str) -> bytes:
        if self.pos + n > len(self.data):
            raise PduError(f"truncated: needs {n} octets, {len(self.data) - self.pos} left",
                           field=name, command=self.cmd)
        self.pos += n
        return self.data[self.pos - n:self.pos]

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def tlvs(self) -> Tlvs:
        out: list[tuple[int, bytes]] = []
        while self.left:
            if self.left < 4:
                raise PduError("truncated TLV header", field="tlvs", command=self.cmd)
            tag, length = struct.unpack_from(">HH", self.data, self.pos)
            self.pos += 4
            out.append((tag, self.raw(length, f"tlv 0x{tag:04X}")))
        return tuple(out)

    def end(self) -> None:
        if self.left:
            raise PduError(f"{self.left} unexpected trailing octets", field="body",
                           command=self.cmd)


def peek_header(data: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence) of a frame; PduError if short."""
    if len(data) < HEADER_LEN:
        raise PduError(f"truncated header: {len(data)} of 16 octets", field="header")
    length, command_id, status, sequence = HEADER.unpack_from(data)
    return length, command_id, status, sequence


def decode(data: bytes) -> Pdu:
    """One complete PDU. Raises PduError (naming the command and field) and nothing else."""
    length, command_id, status, sequence = peek_header(data)
    cmd = command_name(command_id)
    if length != len(data):
        raise PduError(f"says {length} octets, frame has {len(data)}", field="command_length",
                       command=cmd)
    cur = _Cursor(data[HEADER_LEN:], cmd)
    try:
        cid = CommandId(command_id)
    except ValueError:
        return UnknownPdu(sequence, status, raw_command_id=command_id, body=cur.data)
    if cid in _HEADER_ONLY:
        cur.end()
        return _HEADER_ONLY[cid](sequence, status)  # type: ignore[return-value]
    if cid in _BINDS:
        pdu: Pdu = _BINDS[cid](
            sequence, status, system_id=cur.cstr("system_id"), password=cur.cstr("password"),
            system_type=cur.cstr("system_type"), interface_version=cur.u8("interface_version"),
            addr_ton=cur.u8("addr_ton"), addr_npi=cur.u8("addr_npi"),
            address_range=cur.cstr("address_range"),
        )
        cur.end()
        return pdu
    if cid in _BIND_RESPS:
        # An SMSC refusing a bind may send the header alone (section 4.1.2).
        system_id = cur.cstr("system_id") if cur.left or status == ESME_ROK else ""
        return _BIND_RESPS[cid](sequence, status, system_id=system_id, tlvs=cur.tlvs())
    if cid in _SM_RESPS:
        # submit_sm_resp bodies are omitted on error (section 4.4.2), and some SMSCs omit the
        # empty deliver_sm_resp message_id too.
        message_id = cur.cstr("message_id") if cur.left else ""
        cur.end()
        return _SM_RESPS[cid](sequence, status, message_id=message_id)
    cls = _SMS[cid]
    # A dict display evaluates left to right, so the fields are read in wire order.
    fields = {
        "service_type": cur.cstr("service_type"),
        "source_addr_ton": cur.u8("source_addr_ton"),
        "source_addr_npi": cur.u8("source_addr_npi"),
        "source_addr": cur.cstr("source_addr"),
        "dest_addr_ton": cur.u8("dest_addr_ton"),
        "dest_addr_npi": cur.u8("dest_addr_npi"),
        "destination_addr": cur.cstr("destination_addr"),
        "esm_class": cur.u8("esm_class"),
        "protocol_id": cur.u8("protocol_id"),
        "priority_flag": cur.u8("priority_flag"),
        "schedule_delivery_time": cur.cstr("schedule_delivery_time"),
        "validity_period": cur.cstr("validity_period"),
        "registered_delivery": cur.u8("registered_delivery"),
        "replace_if_present_flag": cur.u8("replace_if_present_flag"),
        "data_coding": cur.u8("data_coding"),
        "sm_default_msg_id": cur.u8("sm_default_msg_id"),
    }
    sm_length = cur.u8("sm_length")
    short_message = cur.raw(sm_length, "short_message")
    return cls(sequence, status, short_message=short_message, tlvs=cur.tlvs(),
               **fields)  # type: ignore[arg-type]


class PduReader:
    """Incremental framing: feed what the socket gave, get back complete raw frames.

    Framing errors (a command_length below 16 or above MAX_PDU_LEN) are fatal for the
    connection because the stream cannot be resynchronised; body errors are not, so frames are
    returned raw and decoded by the caller, which can answer generic_nack for the bad one.
    """

    def __init__(self, max_length: int = MAX_PDU_LEN) -> None:
        self._buf = bytearray()
        self._max = max_length

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = struct.unpack_from(">I", buf, pos)
            if length < HEADER_LEN or length > self._max:
                self._buf = bytearray()
                raise PduError(
                    f"{length} is outside {HEADER_LEN}..{self._max}", field="command_length"
                )
            if len(buf) - pos < length:
                break
            frames.append(bytes(buf[pos:pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return frames

    def feed_pdus(self, data: bytes) -> list[Pdu]:
        return [decode(frame) for frame in self.feed(data)]

    @property
    def buffered(self) -> int:
        return len(self._buf)
