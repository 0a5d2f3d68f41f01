"""The seam between the dispatcher and any SMS gateway (SMPP or HTTP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.models import InboundSms, OutboundSms, Receipt, SubmitResult

ReceiptHandler = Callable[[Receipt], Awaitable[None]]
InboundHandler = Callable[[InboundSms], Awaitable[None]]


class Gateway(Protocol):
    """An SMS gateway.

    ``submit`` returns once the gateway accepted the message (with its ids) or raises one of
    ``GatewayTemporaryError`` (retry later), ``GatewayPermanentError`` (never retry) or
    ``GatewayAmbiguousError`` (the request may have reached the SMSC: never resend silently).
    Receipts and replies are pushed to the handlers given to ``start``; for HTTP gateways they
    arrive through the agent's web server, which calls the same handlers.
    """

    name: str

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None: ...

    async def submit(self, sms: OutboundSms) -> SubmitResult: ...

    async def close(self) -> None: ...

    @property
    def healthy(self) -> bool: ...
