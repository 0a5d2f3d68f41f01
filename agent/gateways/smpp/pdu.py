"""SMPP 3.4 PDU codec: frozen dataclasses, bytes in and out, incremental framing; no I/O."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

from agent.errors import PduError

HEADER = struct.Struct(">IIII")
HEADER_LEN = 16
MAX_PDU_LEN = 64 * 1024  # no 3.4 PDU needs more; a larger length is a framing error or an attack
INTERFACE_VERSION = 0x34


class CommandId(enum.IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015


# -- command_status (SMPP 3.4 section 5.1.3) ------------------------------------------------------
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RINVSERTYP = 0x15
ESME_RINVESMCLASS = 0x43
ESME_RSUBMITFAIL = 0x45
ESME_RINVSRCTON = 0x48
ESME_RINVSRCNPI = 0x49
ESME_RINVDSTTON = 0x50
ESME_RINVDSTNPI = 0x51
ESME_RINVSYSTYP = 0x53
ESME_RINVREGDLVFLG = 0x07
ESME_RTHROTTLED = 0x58
ESME_RINVSCHED = 0x61
ESME_RINVEXPIRY = 0x62
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65
ESME_RX_R_APPN = 0x66
ESME_RINVOPTPARSTREAM = 0xC0
ESME_ROPTPARNOTALLWD = 0xC1
ESME_RINVPARLEN = 0xC2
ESME_RMISSINGOPTPARAM = 0xC3
ESME_RINVOPTPARAMVAL = 0xC4
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF

STATUS_NAMES: dict[int, str] = {
    v: k for k, v in globals().items() if k.startswith("ESME_R") and isinstance(v, int)
}

# Statuses that say "not now" rather than "never": the SMSC or the session is busy or broken,
# the message itself is fine. Everything else (bad address, rejected, unknown) is permanent,
# because resending a message the SMSC judged bad only repeats the judgement.
_RETRY = frozenset(
    {ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR, ESME_RX_T_APPN, ESME_RSUBMITFAIL,
     ESME_RINVBNDSTS}
)
# The SMSC asks us to slow down: retry the same PDU after a pause instead of failing it.
THROTTLING = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})

StatusClass = Literal["ok", "retry", "permanent"]


def classify_status(status: int) -> StatusClass:
    if status == ESME_ROK:
        return "ok"
    return "retry" if status in _RETRY else "permanent"


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


# -- optional parameters (TLVs, section 5.3.2) ----------------------------------------------------
class Tag(enum.IntEnum):
    USER_MESSAGE_REFERENCE = 0x0204
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427
    RECEIPTED_MESSAGE_ID = 0x001E
    DLT_PE_ID = 0x1400  # India DLT principal entity id (operator specific)
    DLT_TEMPLATE_ID = 0x1401  # India DLT content template id (operator specific)


Tlvs: TypeAlias = tuple[tuple[int, bytes], ...]


def tlv_u8(tag: int, value: int) -> tuple[int, bytes]:
    return tag, struct.pack(">B", value)


def tlv_u16(tag: int, value: int) -> tuple[int, bytes]:
    return tag, struct.pack(">H", value)


def tlv_cstr(tag: int, value: str) -> tuple[int, bytes]:
    return tag, value.encode("latin-1") + b"\0"


def tlv_get(tlvs: Tlvs, tag: int) -> bytes | None:
    for t, v in tlvs:
        if t == tag:
            return v
    return None


def tlv_int(tlvs: Tlvs, tag: int) -> int | None:
    v = tlv_get(tlvs, tag)
    if v is None or len(v) not in (1, 2, 4):
        return None
    return int.from_bytes(v, "big")


def tlv_str(tlvs: Tlvs, tag: int) -> str | None:
    v = tlv_get(tlvs, tag)
    return None if v is None else v.rstrip(b"\0").decode("latin-1")


# -- PDUs -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Header:
    sequence: int
    command_status: int = ESME_ROK
    command_id: ClassVar[CommandId]


@dataclass(frozen=True, slots=True)
class GenericNack(_Header):
    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK


@dataclass(frozen=True, slots=True)
class EnquireLink(_Header):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK


@dataclass(frozen=True, slots=True)
class EnquireLinkResp(_Header):
    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK_RESP


@dataclass(frozen=True, slots=True)
class Unbind(_Header):
    command_id: ClassVar[CommandId] = CommandId.UNBIND


@dataclass(frozen=True, slots=True)
class UnbindResp(_Header):
    command_id: ClassVar[CommandId] = CommandId.UNBIND_RESP


@dataclass(frozen=True, slots=True)
class _Bind(_Header):
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def __repr__(self) -> str:  # the password must never reach a log line through repr()
        return (
            f"{type(self).__name__}(sequence={self.sequence}, system_id={self.system_id!r}, "
            f"password='***', system_type={self.system_type!r})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class BindTransmitter(_Bind):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSMITTER


@dataclass(frozen=True, slots=True, repr=False)
class BindReceiver(_Bind):
    command_id: ClassVar[CommandId] = CommandId.BIND_RECEIVER


@dataclass(frozen=True, slots=True, repr=False)
class BindTransceiver(_Bind):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER


@dataclass(frozen=True, slots=True)
class _BindResp(_Header):
    system_id: str = ""
    tlvs: Tlvs = ()


@dataclass(frozen=True, slots=True)
class BindTransmitterResp(_BindResp):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSMITTER_RESP


@dataclass(frozen=True, slots=True)
class BindReceiverResp(_BindResp):
    command_id: ClassVar[CommandId] = CommandId.BIND_RECEIVER_RESP


@dataclass(frozen=True, slots=True)
class BindTransceiverResp(_BindResp):
    command_id: ClassVar[CommandId] = CommandId.BIND_TRANSCEIVER_RESP


@dataclass(frozen=True, slots=True)
class _Sm(_Header):
    """The body shared by submit_sm and deliver_sm (sections 4.4.1 and 4.6.1)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = ()

    def tlv(self, tag: int) -> bytes | None:
        return tlv_get(self.tlvs, tag)

    @property
    def message_payload(self) -> bytes | None:
        return tlv_get(self.tlvs, Tag.MESSAGE_PAYLOAD)

    @property
    def receipted_message_id(self) -> str | None:
        return tlv_str(self.tlvs, Tag.RECEIPTED_MESSAGE_ID)

    @property
    def message_state(self) -> int | None:
        return tlv_int(self.tlvs, Tag.MESSAGE_STATE)

    @property
    def user_message_reference(self) -> int | None:
        return tlv_int(self.tlvs, Tag.USER_MESSAGE_REFERENCE)

    @property
    def sar(self) -> tuple[int, int, int] | None:
        """(reference, total, sequence) from the sar_* TLVs, when all three are present."""
        ref = tlv_int(self.tlvs, Tag.SAR_MSG_REF_NUM)
        total = tlv_int(self.tlvs, Tag.SAR_TOTAL_SEGMENTS)
        seq = tlv_int(self.tlvs, Tag.SAR_SEGMENT_SEQNUM)
        if ref is None or total is None or seq is None:
            return None
        return ref, total, seq


@dataclass(frozen=True, slots=True)
class SubmitSm(_Sm):
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM


@dataclass(frozen=True, slots=True)
class DeliverSm(_Sm):
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM


@dataclass(frozen=True, slots=True)
class SubmitSmResp(_Header):
    message_id: str = ""
    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM_RESP


@dataclass(frozen=True, slots=True)
class DeliverSmResp(_Header):
    message_id: str = ""  # always empty in 3.4, kept so peers that fill it still decode
    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM_RESP


@dataclass(frozen=True, slots=True)
class UnknownPdu(_Header):
    """A well-framed PDU whose command_id this codec does not implement (answer generic_nack)."""

    raw_command_id: int = 0
    body: bytes = b""
    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK


Pdu: TypeAlias = (
    GenericNack | EnquireLink | EnquireLinkResp | Unbind | UnbindResp | BindTransmitter
    | BindReceiver | BindTransceiver | BindTransmitterResp | BindReceiverResp
    | BindTransceiverResp | SubmitSm | SubmitSmResp | DeliverSm | DeliverSmResp | UnknownPdu
)

_HEADER_ONLY: dict[CommandId, type[_Header]] = {
    c.command_id: c for c in (GenericNack, EnquireLink, EnquireLinkResp, Unbind, UnbindResp)
}
BindType: TypeAlias = type[BindTransmitter] | type[BindReceiver] | type[BindTransceiver]
BindRespType: TypeAlias = (
    type[BindTransmitterResp] | type[BindReceiverResp] | type[BindTransceiverResp]
)
_BINDS: dict[CommandId, BindType] = {
    c.command_id: c for c in (BindTransmitter, BindReceiver, BindTransceiver)
}
_BIND_RESPS: dict[CommandId, BindRespType] = {
    c.command_id: c for c in (BindTransmitterResp, BindReceiverResp, BindTransceiverResp)
}
_SMS: dict[CommandId, type[SubmitSm] | type[DeliverSm]] = {
    c.command_id: c for c in (SubmitSm, DeliverSm)
}
_SM_RESPS: dict[CommandId, type[SubmitSmResp] | type[DeliverSmResp]] = {
    c.command_id: c for c in (SubmitSmResp, DeliverSmResp)
}

# Maximum C-octet string sizes, terminating NUL included (section 4).
_MAX = {
    "system_id": 16, "password": 9, "system_type": 13, "address_range": 41, "service_type": 6,
    "source_addr": 21, "destination_addr": 21, "schedule_delivery_time": 17,
    "validity_period": 17, "message_id": 65,
}


def command_name(command_id: int) -> str:
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return f"command 0x{command_id:08X}"


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
    fields = dict(
        service_type=cur.cstr("service_type"), source_addr_ton=cur.u8("source_addr_ton"),
        source_addr_npi=cur.u8("source_addr_npi"), source_addr=cur.cstr("source_addr"),
        dest_addr_ton=cur.u8("dest_addr_ton"), dest_addr_npi=cur.u8("dest_addr_npi"),
        destination_addr=cur.cstr("destination_addr"), esm_class=cur.u8("esm_class"),
        protocol_id=cur.u8("protocol_id"), priority_flag=cur.u8("priority_flag"),
        schedule_delivery_time=cur.cstr("schedule_delivery_time"),
        validity_period=cur.cstr("validity_period"),
        registered_delivery=cur.u8("registered_delivery"),
        replace_if_present_flag=cur.u8("replace_if_present_flag"),
        data_coding=cur.u8("data_coding"), sm_default_msg_id=cur.u8("sm_default_msg_id"),
    )
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
