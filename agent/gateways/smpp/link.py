"""One SMPP bind of a gateway (transceiver, transmitter or receiver): its window, its session,
and the bind exchange that opens it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agent.errors import GatewayError
from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.session import Session


class BindRefused(GatewayError):
    """The SMSC answered our bind with an error status (credentials, system_type, IP)."""


@dataclass(eq=False)
class Link:
    """One bind of the gateway: its PDU type, its window and its current session."""

    index: int
    kind: P.BindType
    sends: bool
    window: asyncio.Semaphore
    session: Session | None = None
    task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.session is not None and not self.session.closed

    @property
    def role(self) -> str:
        return {P.BindTransceiver: "transceiver", P.BindTransmitter: "transmitter",
                P.BindReceiver: "receiver"}[self.kind]


BIND_RESP: dict[P.BindType, P.BindRespType] = {
    P.BindTransceiver: P.BindTransceiverResp, P.BindTransmitter: P.BindTransmitterResp,
    P.BindReceiver: P.BindReceiverResp,
}


async def bind(session: Session, link: Link, *, gateway: str, where: str, system_id: str,
               password: str, system_type: str, timeout: float) -> None:
    """Send the link's bind on a fresh session; BindRefused (session closed) if refused."""
    session.start_reading()
    try:
        resp = await session.request(
            link.kind(0, system_id=system_id, password=password,
                      system_type=system_type),
            timeout=timeout,
        )
    except BaseException:
        session.close("bind failed")
        raise
    if resp.command_status != P.ESME_ROK or not isinstance(resp, BIND_RESP[link.kind]):
        session.close("bind refused")
        name = P.status_name(resp.command_status)
        raise BindRefused(
            f"{gateway}: SMSC {where} refused bind_{link.role} for "
            f"system_id {system_id!r}: {name}",
            code=resp.command_status, reason="bind_refused",
        )
    session.start_keepalive()

