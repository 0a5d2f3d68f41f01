"""What a text becomes on the wire (pure): an ``OutboundSms`` to its encoded submit_sm PDUs,
addressed as the gateway is configured, with the operator's India DLT TLVs and a validity
period that ends with the message's ``max_age``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.sm import make_submit_parts, relative_validity, sender_address
from agent.models import OutboundSms


@dataclass(frozen=True, slots=True)
class SubmitShape:
    """One gateway's way of sending: addressing (``source_addr_ton``/``npi`` None: from each
    message's sender), ``message_payload`` instead of UDH parts, and the TLV tags the operator
    reads India DLT ids from (rules.yaml gateways.*.tlvs)."""

    source_addr_ton: int | None
    source_addr_npi: int | None
    dest_addr_ton: int
    dest_addr_npi: int
    message_payload: bool
    dlt_pe_tag: int
    dlt_template_tag: int
    dlt_chain: tuple[int, bytes] | None  # the gateway's PE-TM chain, on every text

    @classmethod
    def of(cls, *, source_addr_ton: int | None = None, source_addr_npi: int | None = None,
           dest_addr_ton: int = 1, dest_addr_npi: int = 1, message_payload: bool = False,
           dlt_tlvs: Mapping[str, int] | None = None,
           dlt_chain_id: str | None = None) -> SubmitShape:
        tags = dict(dlt_tlvs or {})
        chain = ((tags.get("dlt_chain_id", P.Tag.DLT_TM_CHAIN), dlt_chain_id.encode("ascii"))
                 if dlt_chain_id else None)
        return cls(source_addr_ton, source_addr_npi, dest_addr_ton, dest_addr_npi,
                   message_payload, tags.get("dlt_entity_id", P.Tag.DLT_PE_ID),
                   tags.get("dlt_template_id", P.Tag.DLT_TEMPLATE_ID), chain)

    def source(self, sender: str) -> tuple[str, int, int]:
        addr, ton, npi = sender_address(sender)
        if self.source_addr_ton is not None and self.source_addr_npi is not None:
            return addr, self.source_addr_ton, self.source_addr_npi
        return addr, ton, npi

    def frames(self, sms: OutboundSms, *, ref: int, now: datetime) -> list[bytes]:
        """The encoded submit_sm of each part (sequence 0: the session numbers it); ``ref``
        ties a long text's parts together. PduError for a text that cannot be encoded."""
        tlvs = dict(sms.tlvs)
        # India DLT ids go as octet strings in the operator TLVs; explicit tlvs win.
        if sms.dlt_entity_id:
            tlvs.setdefault(self.dlt_pe_tag, sms.dlt_entity_id.encode("ascii"))
        if sms.dlt_template_id:
            tlvs.setdefault(self.dlt_template_tag, sms.dlt_template_id.encode("ascii"))
        if self.dlt_chain is not None:
            tlvs.setdefault(*self.dlt_chain)
        validity = ""
        if sms.expires_at is not None:
            # An SMSC that queues must not deliver after the rule's max_age either.
            validity = relative_validity((sms.expires_at - now).total_seconds())
        source, ton, npi = self.source(sms.sender)
        parts = make_submit_parts(
            source_addr=source, destination_addr=sms.to.lstrip("+"), text=sms.text,
            ref=ref, source_addr_ton=ton, source_addr_npi=npi,
            dest_addr_ton=self.dest_addr_ton, dest_addr_npi=self.dest_addr_npi,
            registered_delivery=1 if sms.request_receipt else 0,
            tlvs=tuple(tlvs.items()), validity_period=validity, encoding=sms.encoding,
            message_payload=self.message_payload,
        )
        return [P.encode(part) for part in parts]
