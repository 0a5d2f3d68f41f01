"""SMPP 3.4 numbers: header layout, command ids, command_status codes and how to treat each."""

from __future__ import annotations

import enum
import struct
from typing import Literal

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


def command_name(command_id: int) -> str:
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return f"command 0x{command_id:08X}"


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
