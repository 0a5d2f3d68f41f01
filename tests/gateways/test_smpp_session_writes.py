"""How an SMPP session puts PDUs on the wire: a submit_sm leaves at once, later PDUs of the same
turn of the event loop leave together, in order (a real socket pair on loopback)."""

from __future__ import annotations

import asyncio
import socket

from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.session import Session


async def _nothing(_: P.DeliverSm) -> int:
    return P.ESME_ROK


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


async def test_first_pdu_of_a_turn_is_written_at_once_the_rest_together_in_order() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    reader, writer = await asyncio.open_connection(*listener.getsockname())
    peer, _ = listener.accept()
    session = Session(reader, writer, on_deliver=_nothing, response_timeout=5.0,
                      enquire_link_interval=None, gateway="smsc")
    try:
        frame = P.encode(P.SubmitSm(0, source_addr="ACMECO", destination_addr="919812345678",
                                    short_message=b"hi"))
        first = session.send_frame(frame)
        # Nothing awaited since: the submit_sm is already on the socket (loopback delivers at
        # once), not waiting for the rest of this turn.
        got = _received(peer)
        assert P.decode(got) == P.SubmitSm(1, source_addr="ACMECO",
                                           destination_addr="919812345678", short_message=b"hi")
        session.send_frame(frame)
        session.send(P.EnquireLink(0))
        assert _received(peer) == b""  # batched until the turn ends
        await asyncio.sleep(0)
        got = _received(peer)
        framer = P.PduReader()
        assert [P.decode(f).sequence for f in framer.feed(got)] == [2, 3]
        # The next turn's first PDU goes at once again.
        session.send(P.EnquireLink(0))
        assert P.decode(_received(peer)) == P.EnquireLink(4)
        assert not first.done()
    finally:
        session.close("test over")
        peer.close()
        listener.close()
