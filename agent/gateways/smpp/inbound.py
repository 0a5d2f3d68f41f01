"""What an SMSC delivers to a bind: receipts to the receipt handler, replies (long ones joined
from their parts) to the inbound handler. Answers the deliver_sm status."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from agent.errors import PduError
from agent.gateways.base import InboundHandler, ReceiptHandler
from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.sm import MoReassembler, is_receipt, receipt_from_deliver, sm_text
from agent.logs import mask_number
from agent.models import InboundSms

log = structlog.get_logger("agent.gateways.smpp.client")


class Deliveries:
    """The deliver_sm handler of one gateway's binds (handlers set when the gateway starts)."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._on_receipt: ReceiptHandler | None = None
        self._on_inbound: InboundHandler | None = None
        self._mo_parts = MoReassembler()

    def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        self._on_receipt, self._on_inbound = on_receipt, on_inbound

    async def __call__(self, pdu: P.DeliverSm) -> int:
        if is_receipt(pdu):
            try:
                receipt = receipt_from_deliver(pdu, gateway=self.name)
            except PduError as exc:
                # Answering an error would make the SMSC redeliver the same junk forever.
                log.warning("smpp_receipt_unreadable", gateway=self.name, error=str(exc))
                return P.ESME_ROK
            log.debug("smpp_receipt_received", gateway=self.name, smsc_id=receipt.smsc_id,
                      state=receipt.state.value)
            if self._on_receipt is not None:
                await self._on_receipt(receipt)
            return P.ESME_ROK
        try:
            concat, text = sm_text(pdu)
        except PduError as exc:
            log.warning("smpp_inbound_unreadable", gateway=self.name, error=str(exc))
            return P.ESME_ROK
        if concat is not None and concat[1] > 1:
            whole = self._mo_parts.add(pdu.source_addr, pdu.destination_addr, concat, text,
                                       self._clock())
            if whole is None:
                return P.ESME_ROK  # acknowledged; the reply is handed on when complete
            text = whole
        sender = pdu.source_addr
        if pdu.source_addr_ton == 1 and sender and not sender.startswith("+"):
            sender = "+" + sender  # international TON: the digits are already E.164
        inbound = InboundSms(gateway=self.name, sender=sender, recipient=pdu.destination_addr,
                             text=text, received_at=datetime.now(UTC))
        log.info("smpp_inbound_received", gateway=self.name, sender=mask_number(sender))
        if self._on_inbound is not None:
            await self._on_inbound(inbound)
        return P.ESME_ROK
