"""SMPP 3.4 optional parameters (TLVs, section 5.3.2): the tags we use, building and reading values."""

from __future__ import annotations

import enum
import struct
from typing import TypeAlias


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
    # India DLT PE-TM chain: the tag after the two above in Indian operators' DLT SMPP
    # interface specifications (where the telemarketer id went before chain binding);
    # operator specific like them, so rules.yaml's tlvs may name another.
    DLT_TM_CHAIN = 0x1402


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
