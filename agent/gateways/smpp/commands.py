"""SMPP 3.4 PDUs as frozen dataclasses, one per command_id the agent speaks; no encoding here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from agent.gateways.smpp.constants import ESME_ROK, INTERFACE_VERSION, CommandId
from agent.gateways.smpp.tlv import Tag, Tlvs, tlv_get, tlv_int, tlv_str


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

BindType: TypeAlias = type[BindTransmitter] | type[BindReceiver] | type[BindTransceiver]
BindRespType: TypeAlias = (
    type[BindTransmitterResp] | type[BindReceiverResp] | type[BindTransceiverResp]
)
