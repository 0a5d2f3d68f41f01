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

    #: Submits the gateway takes at once (SMPP: unacknowledged submits over every sending
    #: bind); the dispatcher keeps no more than this many of its rows in flight on it.
    @property
    def window(self) -> int: ...

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None: ...

    async def submit(self, sms: OutboundSms) -> SubmitResult: ...

    async def close(self) -> None: ...

    @property
    def healthy(self) -> bool: ...

    async def wait_ready(self, timeout: float) -> None:
        """Return once the gateway can take a submit (at once when ``healthy``); raise a
        ``GatewayError`` (e.g. a refused bind, or ``not_bound`` after ``timeout`` seconds)
        otherwise. The dispatcher waits here before claiming a row, so nothing is claimed
        while the SMSC cannot be reached."""
