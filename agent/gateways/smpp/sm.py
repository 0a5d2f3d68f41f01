"""Short-message content over SMPP: text to submit_sm parts (UDH), text back, delivery receipts."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from agent.errors import PduError
from agent.gateways.smpp.pdu import DeliverSm, SubmitSm, Tag, Tlvs, _Sm
from agent.models import Receipt, ReceiptState
from agent.sms.encoding import (
    decode_gsm7,
    decode_ucs2,
    encode_gsm7,
    encode_ucs2,
    is_gsm7,
    split_segments,
)

DC_DEFAULT = 0x00  # SMSC default alphabet, which for us (and nearly every SMSC) is GSM 03.38
DC_IA5 = 0x01
DC_LATIN1 = 0x03
DC_UCS2 = 0x08

ESM_UDHI = 0x40
ESM_RECEIPT = 0x04  # esm_class "SMSC delivery receipt" message type (section 5.2.12)
IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08


def make_submit_parts(
    *,
    source_addr: str,
    destination_addr: str,
    text: str,
    ref: int,
    source_addr_ton: int = 5,
    source_addr_npi: int = 0,
    dest_addr_ton: int = 1,
    dest_addr_npi: int = 1,
    registered_delivery: int = 1,
    service_type: str = "",
    tlvs: Tlvs = (),
    validity_period: str = "",
    encoding: str | None = None,
    message_payload: bool = False,
) -> list[SubmitSm]:
    """submit_sm PDUs (sequence 0: the sender numbers them) for ``text``; a long text gets an
    8-bit-reference concatenation UDH per part. Split boundaries come from split_segments, so
    an escape pair or a surrogate pair never straddles two parts. ``encoding`` is the one the
    text was found to need when it was rendered ("GSM-7" or "UCS-2"); ``message_payload``
    puts the whole text in one submit_sm's message_payload TLV for the SMSC to segment."""
    gsm = encoding == "GSM-7" if encoding else is_gsm7(text)
    encode = encode_gsm7 if gsm else encode_ucs2
    data_coding = DC_DEFAULT if gsm else DC_UCS2
    if message_payload:
        return [SubmitSm(
            0, service_type=service_type, source_addr_ton=source_addr_ton,
            source_addr_npi=source_addr_npi, source_addr=source_addr,
            dest_addr_ton=dest_addr_ton, dest_addr_npi=dest_addr_npi,
            destination_addr=destination_addr, validity_period=validity_period,
            registered_delivery=registered_delivery, data_coding=data_coding,
            tlvs=(*tuple(tlvs), (Tag.MESSAGE_PAYLOAD, _encoded(encode, text))),
        )]
    segments = split_segments(text, "GSM-7" if gsm else "UCS-2")
    total = len(segments)
    if total > 255:
        raise PduError(f"text needs {total} segments, concatenation allows 255",
                       field="short_message", command="submit_sm")
    out: list[SubmitSm] = []
    for seq, segment in enumerate(segments, start=1):
        try:
            payload = encode(segment)
        except ValueError as exc:  # a carried encoding that does not fit the text
            raise PduError(str(exc), field="short_message", command="submit_sm") from None
        esm_class = 0
        if total > 1:
            payload = bytes((5, IEI_CONCAT_8, 3, ref & 0xFF, total, seq)) + payload
            esm_class = ESM_UDHI
        out.append(SubmitSm(
            0, service_type=service_type, source_addr_ton=source_addr_ton,
            source_addr_npi=source_addr_npi, source_addr=source_addr,
            dest_addr_ton=dest_addr_ton, dest_addr_npi=dest_addr_npi,
            destination_addr=destination_addr, esm_class=esm_class,
            validity_period=validity_period,
            registered_delivery=registered_delivery, data_coding=data_coding,
            short_message=payload, tlvs=tuple(tlvs),
        ))
    return out


def _encoded(encode: Callable[[str], bytes], text: str) -> bytes:
    try:
        return encode(text)
    except ValueError as exc:  # a carried encoding that does not fit the text
        raise PduError(str(exc), field="message_payload", command="submit_sm") from None


# Type of number / numbering plan for a sender (SMPP 3.4 section 5.2.5/5.2.6). Operators route
# (and some refuse) by them: an alphanumeric sender is 5/0, a short code network-specific 3/0,
# a full number international 1/1 (its digits already E.164, without "+").
TON_INTERNATIONAL, TON_NETWORK, TON_ALPHANUMERIC = 1, 3, 5
NPI_UNKNOWN, NPI_E164 = 0, 1
SHORT_CODE_MAX_DIGITS = 8


def sender_address(sender: str) -> tuple[str, int, int]:
    """(source_addr, ton, npi) for a sender id as written in rules.yaml."""
    digits = sender[1:] if sender.startswith("+") else sender
    if digits.isdigit():
        if sender.startswith("+") or len(digits) > SHORT_CODE_MAX_DIGITS:
            return digits, TON_INTERNATIONAL, NPI_E164
        return digits, TON_NETWORK, NPI_UNKNOWN
    return sender, TON_ALPHANUMERIC, NPI_UNKNOWN


def relative_validity(seconds: float) -> str:
    """An SMPP relative time "YYMMDDhhmmss000R" (section 7.1.1) for a validity period: the SMSC
    drops the message instead of delivering it later than this. At least one minute, at most
    the 99 years the format can say."""
    total = max(60, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    return f"{min(years, 99):02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def split_udh(esm_class: int, data: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """((ref, total, seq) or None, payload without UDH). PduError on a malformed UDH."""
    if not esm_class & ESM_UDHI:
        return None, data
    if not data:
        raise PduError("UDHI set but short_message is empty", field="udh")
    udhl = data[0]
    if udhl + 1 > len(data):
        raise PduError(f"UDH length {udhl} exceeds short_message", field="udh")
    udh, payload = data[1:udhl + 1], data[udhl + 1:]
    concat: tuple[int, int, int] | None = None
    i = 0
    while i < len(udh):
        if i + 2 > len(udh):
            raise PduError("truncated information element", field="udh")
        iei, iel = udh[i], udh[i + 1]
        value = udh[i + 2:i + 2 + iel]
        if len(value) != iel:
            raise PduError(f"IE 0x{iei:02X} truncated", field="udh")
        if iei == IEI_CONCAT_8 and iel == 3:
            concat = (value[0], value[1], value[2])
        elif iei == IEI_CONCAT_16 and iel == 4:
            concat = ((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + iel
    return concat, payload


def decode_text(data_coding: int, payload: bytes) -> str:
    """Text of a short message body; unknown codings fall back to Latin-1 rather than fail."""
    if data_coding == DC_UCS2:
        return decode_ucs2(payload)
    if data_coding == DC_DEFAULT:
        try:
            return decode_gsm7(payload)
        except ValueError:
            # Some SMSCs send data_coding 0 meaning Latin-1; octets > 0x7F prove it.
            return payload.decode("latin-1")
    if data_coding == DC_IA5:
        return payload.decode("ascii", errors="replace")
    return payload.decode("latin-1")


def sm_text(pdu: _Sm) -> tuple[tuple[int, int, int] | None, str]:
    """(concatenation info from UDH or sar_* TLVs, text) of a submit_sm / deliver_sm."""
    body = pdu.message_payload if not pdu.short_message and pdu.message_payload else None
    concat, payload = split_udh(pdu.esm_class, body if body is not None else pdu.short_message)
    return concat or pdu.sar, decode_text(pdu.data_coding, payload)


# -- delivery receipts (SMPP 3.4 appendix B) ------------------------------------------------------
#: Receipt ``stat`` words (SMPP 3.4 appendix B) -> states; HTTP gateways report the same words.
STAT_STATES = {
    "DELIVRD": ReceiptState.DELIVERED,
    "UNDELIV": ReceiptState.UNDELIVERED,
    "EXPIRED": ReceiptState.EXPIRED,
    "REJECTD": ReceiptState.REJECTED,
    "ACCEPTD": ReceiptState.ACCEPTED,
    "ENROUTE": ReceiptState.ACCEPTED,
    "BUFFRED": ReceiptState.ACCEPTED,
    "UNKNOWN": ReceiptState.UNKNOWN,
    "DELETED": ReceiptState.UNDELIVERED,
}
# message_state TLV values (section 5.2.28).
_MESSAGE_STATE_TO_STATE = {
    1: ReceiptState.ACCEPTED,  # ENROUTE
    2: ReceiptState.DELIVERED,
    3: ReceiptState.EXPIRED,
    4: ReceiptState.UNDELIVERED,  # DELETED
    5: ReceiptState.UNDELIVERED,
    6: ReceiptState.ACCEPTED,
    7: ReceiptState.UNKNOWN,
    8: ReceiptState.REJECTED,
}

_FIELD = re.compile(
    r"(?P<key>id|sub|dlvrd|submit date|done date|stat|err|text)\s*:\s*"
    r"(?P<value>.*?)(?=\s+(?:id|sub|dlvrd|submit date|done date|stat|err|text)\s*:|$)",
    re.IGNORECASE | re.DOTALL,
)


def parse_receipt_fields(text: str) -> dict[str, str]:
    """The key:value fields of a receipt text, keys lower-case; ``text`` runs to the end."""
    fields: dict[str, str] = {}
    for m in _FIELD.finditer(text):
        key = m.group("key").lower()
        if key == "text":
            fields[key] = text[m.start("value"):]
            break
        fields.setdefault(key, m.group("value").strip())
    return fields


def parse_receipt_date(value: str | None) -> datetime | None:
    """A receipt's ``submit date``/``done date`` (YYMMDDhhmm[ss]) in UTC; None if unreadable."""
    # YYMMDDhhmm per the appendix; many SMSCs add seconds. SMSCs do not say their time zone,
    # UTC is the common configuration and the only assumption that is not a guess per site.
    if not value or not value.isdigit():
        return None
    fmt = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}.get(len(value))
    if fmt is None:
        return None
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_receipt(pdu: DeliverSm) -> bool:
    return bool(pdu.esm_class & ESM_RECEIPT) or pdu.receipted_message_id is not None


def receipt_from_deliver(pdu: DeliverSm, *, gateway: str) -> Receipt:
    """A Receipt from a receipt deliver_sm; TLVs win over the free-form text when both exist.
    PduError when neither names the message it is about."""
    _, text = sm_text(pdu)
    fields = parse_receipt_fields(text)
    smsc_id = pdu.receipted_message_id or fields.get("id")
    if not smsc_id:
        raise PduError("receipt names no message id", field="receipted_message_id",
                       command="deliver_sm")
    state: ReceiptState | None = None
    if pdu.message_state is not None:
        state = _MESSAGE_STATE_TO_STATE.get(pdu.message_state)
    if state is None:
        state = STAT_STATES.get(fields.get("stat", "").upper(), ReceiptState.UNKNOWN)
    return Receipt(
        gateway=gateway, state=state, smsc_id=smsc_id, error_code=fields.get("err"),
        done_at=parse_receipt_date(fields.get("done date")), raw=text,
    )


def build_receipt_text(
    *, smsc_id: str, stat: str, err: str = "000", submitted: datetime, done: datetime,
    text: str = "", sub: int = 1, dlvrd: int | None = None,
) -> str:
    if dlvrd is None:
        dlvrd = 1 if stat == "DELIVRD" else 0
    return (
        f"id:{smsc_id} sub:{sub:03d} dlvrd:{dlvrd:03d} "
        f"submit date:{submitted:%y%m%d%H%M} done date:{done:%y%m%d%H%M} "
        f"stat:{stat} err:{err} text:{text[:20]}"
    )


_STAT_TO_MESSAGE_STATE = {
    "ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
    "UNKNOWN": 7, "REJECTD": 8,
}


def make_receipt_deliver(
    *, smsc_id: str, stat: str, err: str, source_addr: str, destination_addr: str,
    submitted: datetime, done: datetime, text: str = "",
) -> DeliverSm:
    """A receipt deliver_sm as an SMSC sends it (sequence 0: the sender numbers it). Addresses
    are those of the original message, swapped: the receipt travels from handset to ESME."""
    body = build_receipt_text(smsc_id=smsc_id, stat=stat, err=err, submitted=submitted,
                              done=done, text=text)
    tlvs: list[tuple[int, bytes]] = [(Tag.RECEIPTED_MESSAGE_ID, smsc_id.encode() + b"\0")]
    if stat in _STAT_TO_MESSAGE_STATE:
        tlvs.append((Tag.MESSAGE_STATE, bytes((_STAT_TO_MESSAGE_STATE[stat],))))
    return DeliverSm(
        0, source_addr=destination_addr, destination_addr=source_addr, esm_class=ESM_RECEIPT,
        data_coding=DC_DEFAULT, short_message=encode_gsm7(_gsm_safe(body)), tlvs=tuple(tlvs),
    )


def make_mo_deliver(*, sender: str, recipient: str, text: str) -> list[DeliverSm]:
    """deliver_sm PDU(s) for a mobile-originated message, concatenated when long."""
    parts = make_submit_parts(source_addr=sender, destination_addr=recipient, text=text,
                              ref=_mo_ref(sender, text), source_addr_ton=1, source_addr_npi=1,
                              registered_delivery=0)
    return [DeliverSm(0, **{f: getattr(p, f) for f in _SM_FIELDS}) for p in parts]


_SM_FIELDS: Sequence[str] = (
    "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton", "dest_addr_npi",
    "destination_addr", "esm_class", "data_coding", "short_message",
)


def _mo_ref(sender: str, text: str) -> int:
    return sum((sender + text).encode("utf-8")) & 0xFF


def _gsm_safe(text: str) -> str:
    return "".join(ch if is_gsm7(ch) else "?" for ch in text)


class MoReassembler:
    """Joins the parts of long replies. Bounded: a part whose siblings never come is dropped
    after ``ttl`` seconds or when ``limit`` messages are pending, so junk cannot grow memory."""

    def __init__(self, ttl: float = 600.0, limit: int = 1000) -> None:
        self._ttl, self._limit = ttl, limit
        self._pending: dict[tuple[str, str, int, int], tuple[float, dict[int, str]]] = {}

    def add(self, sender: str, recipient: str, concat: tuple[int, int, int], text: str,
            now: float) -> str | None:
        ref, total, seq = concat
        for key in [k for k, (t, _) in self._pending.items() if now - t > self._ttl]:
            del self._pending[key]
        key = (sender, recipient, ref, total)
        if key not in self._pending and len(self._pending) >= self._limit:
            self._pending.pop(next(iter(self._pending)))
        _, parts = self._pending.setdefault(key, (now, {}))
        parts[seq] = text
        if len(parts) < total:
            return None
        del self._pending[key]
        return "".join(parts[i] for i in sorted(parts))
