"""The simulator's SMPP 3.4 face: an asyncio SMSC: binds, submits, receipts and MO."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl as ssl_
from collections import deque
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog

from agent.errors import PduError
from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.sm import make_mo_deliver, make_receipt_deliver, sm_text
from agent.sim.core import SimCore

log = structlog.get_logger(__name__)

_BIND_RESP: dict[type[P.Pdu], P.BindRespType] = {
    P.BindTransmitter: P.BindTransmitterResp,
    P.BindReceiver: P.BindReceiverResp,
    P.BindTransceiver: P.BindTransceiverResp,
}


class _Conn:
    """One ESME connection. Requests are handled in arrival order; receipts and MO are
    written from their own tasks, which is safe because each write is one whole PDU."""

    def __init__(self, server: SmppServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.core = server.core
        self.reader, self.writer = reader, writer
        self.bound: type[P.Pdu] | None = None
        self.submits = 0
        self.seq = 0
        self.closed = False
        self.peer = writer.get_extra_info("peername")
        # deliver_sm written but not yet acknowledged: an SMSC keeps receipts and MO until the
        # ESME says it has them, and offers them again on the next bind if the link dies.
        self.outstanding: dict[int, P.DeliverSm] = {}

    @property
    def can_receive(self) -> bool:
        return not self.closed and self.bound in (P.BindReceiver, P.BindTransceiver)

    def write(self, pdu: P.Pdu) -> None:
        if not self.closed:
            self.writer.write(P.encode(pdu))

    def send_request(self, pdu: P.Pdu) -> None:
        self.seq = self.seq % 0x7FFFFFFF + 1
        if isinstance(pdu, P.DeliverSm):
            self.outstanding[self.seq] = pdu
        self.write(dataclasses.replace(pdu, sequence=self.seq))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            # Unacknowledged receipts go to another bind of the account now, as an SMSC
            # routes them; held for the next bind only when none is left.
            for pdu in self.outstanding.values():
                self.server.redeliver(pdu)
            self.outstanding.clear()

    async def run(self) -> None:
        framer = P.PduReader()
        try:
            while not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    break
                frames = framer.feed(data)
                if self.core.faults.never_respond:
                    continue  # black hole: swallow everything, answer nothing
                for frame in frames:
                    self.handle(frame)
                    if self.closed:
                        break
                await self.writer.drain()
        except PduError as exc:
            log.warning("sim_smpp_framing_failed", peer=self.peer, error=str(exc))
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def handle(self, frame: bytes) -> None:
        try:
            pdu = P.decode(frame)
        except PduError as exc:
            _, _, _, seq = P.peek_header(frame)
            log.warning("sim_smpp_pdu_rejected", peer=self.peer, error=str(exc))
            self.write(P.GenericNack(seq, P.ESME_RINVCMDLEN))
            return
        if isinstance(pdu, (P.BindTransmitter, P.BindReceiver, P.BindTransceiver)):
            self.bind(pdu)
        elif isinstance(pdu, P.SubmitSm):
            self.submit(pdu)
        elif isinstance(pdu, P.EnquireLink):
            self.write(P.EnquireLinkResp(pdu.sequence))
        elif isinstance(pdu, P.Unbind):
            self.write(P.UnbindResp(pdu.sequence))
            self.close()
        elif isinstance(pdu, (P.DeliverSmResp, P.GenericNack)):
            held = self.outstanding.pop(pdu.sequence, None)
            if pdu.command_status == P.ESME_ROK:
                self.server.acked += isinstance(pdu, P.DeliverSmResp)
            elif held is not None:  # refused (the ESME could not record it): offer it again
                self.server.retry_later(self, held)
        elif isinstance(pdu, (P.EnquireLinkResp, P.UnbindResp)):
            pass
        else:
            self.write(P.GenericNack(pdu.sequence, P.ESME_RINVCMDID))

    def bind(self, pdu: P.BindTransmitter | P.BindReceiver | P.BindTransceiver) -> None:
        resp = _BIND_RESP[type(pdu)]
        if self.bound is not None:
            status = P.ESME_RALYBND
        elif self.core.faults.refuse_bind:
            status = P.ESME_RBINDFAIL
        elif pdu.system_id != self.server.system_id:
            status = P.ESME_RINVSYSID
        elif pdu.password != self.server.password:
            status = P.ESME_RINVPASWD
        else:
            status = P.ESME_ROK
        if status != P.ESME_ROK:
            log.info("sim_smpp_bind_refused", peer=self.peer, status=P.status_name(status))
            self.write(resp(pdu.sequence, status))
            return
        self.bound = type(pdu)
        self.server.sessions.append(self)
        log.info("sim_smpp_bound", peer=self.peer, kind=type(pdu).__name__)
        self.write(resp(pdu.sequence, system_id=self.server.smsc_name))
        if self.can_receive:
            self.server.flush_held(self)

    def submit(self, pdu: P.SubmitSm) -> None:
        if self.bound not in (P.BindTransmitter, P.BindTransceiver):
            self.write(P.SubmitSmResp(pdu.sequence, P.ESME_RINVBNDSTS))
            return
        drop_after = self.core.faults.drop_after
        if drop_after is not None and self.submits >= drop_after:
            log.info("sim_smpp_connection_dropped", peer=self.peer, after=self.submits)
            self.close()
            return
        self.submits += 1
        self.server.submitted.append(pdu)
        status = self.core.admit(pdu.destination_addr)
        if status:
            self.write(P.SubmitSmResp(pdu.sequence, status))
            return
        try:
            concat, text = sm_text(pdu)
        except PduError:
            self.write(P.SubmitSmResp(pdu.sequence, P.ESME_RINVESMCLASS))
            return
        smsc_id = self.core.accept_part(
            channel="smpp", source=pdu.source_addr, dest=pdu.destination_addr, text=text,
            concat=concat, tlvs=dict(pdu.tlvs),
        )
        self.write(P.SubmitSmResp(pdu.sequence, message_id=smsc_id))
        if pdu.registered_delivery & 0x03:
            self.server.schedule_receipts(self, smsc_id, pdu, text)


class SmppServer:
    """An SMSC on ``host:port`` that accepts the one ``system_id``/``password`` pair."""

    def __init__(self, core: SimCore, *, system_id: str, password: str,
                 host: str = "127.0.0.1", port: int = 0, smsc_name: str = "aftercall-sim",
                 ssl: ssl_.SSLContext | None = None) -> None:
        self.core = core
        self._ssl = ssl  # TLS on the SMPP port, as Jasmin's TLS listener or an stunnel offers
        # The last submit_sm PDUs taken, as sent (addresses, validity, TLVs), for tests to read.
        self.submitted: deque[P.SubmitSm] = deque(maxlen=1000)
        self.system_id, self.password = system_id, password
        self.host, self._port = host, port
        self.smsc_name = smsc_name
        self.sessions: list[_Conn] = []
        self.acked = 0  # deliver_sm_resp received: receipts and MO the ESME took
        self.mo_undelivered = 0
        self.held: list[P.DeliverSm] = []  # receipts and MO waiting for a receiver bind
        self.redelivered = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[_Conn] = set()
        self._mo_rr = 0

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self._port,
                                                  ssl=self._ssl)
        self.core.mo_listeners.append(self.deliver_mo)
        log.info("sim_smpp_listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self.deliver_mo in self.core.mo_listeners:
            self.core.mo_listeners.remove(self.deliver_mo)
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def drop_all(self) -> None:
        """Cut every connection at once (a test's "the SMSC restarted")."""
        for conn in list(self._conns):
            conn.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(self, reader, writer)
        self._conns.add(conn)
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)
            if conn in self.sessions:
                self.sessions.remove(conn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receiver_for(self, preferred: _Conn | None) -> _Conn | None:
        if preferred is not None and preferred.can_receive:
            return preferred
        # The submitting session is gone: an SMSC routes the receipt to another bind of the
        # same account, which here is any bind (the simulator has one account).
        for conn in reversed(self.sessions):
            if conn.can_receive:
                return conn
        return None

    def schedule_receipts(self, conn: _Conn, smsc_id: str, pdu: P.SubmitSm, text: str) -> None:
        submitted = datetime.now(UTC)
        for delay, stat, err in self.core.receipt_plan(smsc_id):
            if pdu.registered_delivery & 0x03 == 2 and stat == "DELIVRD":
                continue  # "receipt on failure only"
            receipt = make_receipt_deliver(
                smsc_id=smsc_id, stat=stat, err=err, source_addr=pdu.source_addr,
                destination_addr=pdu.destination_addr, submitted=submitted,
                done=datetime.now(UTC), text=text,
            )
            self._spawn(self._send_later(conn, delay, receipt))

    async def _send_later(self, conn: _Conn | None, delay: float, pdu: P.DeliverSm) -> None:
        await asyncio.sleep(delay)
        target = self._receiver_for(conn)
        if target is None:
            self.hold(pdu)
            return
        target.send_request(pdu)

    def redeliver(self, pdu: P.DeliverSm) -> None:
        """A deliver_sm the bind it went to never acknowledged: to another receiver bind."""
        target = self._receiver_for(None)
        if target is None:
            self.hold(pdu)
            return
        self.redelivered += 1
        target.send_request(pdu)

    def hold(self, pdu: P.DeliverSm) -> None:
        """Keep a deliver_sm nobody took until a receiver binds (store and forward)."""
        log.info("sim_smpp_deliver_held", smsc_id=pdu.receipted_message_id, held=len(self.held) + 1)
        self.held.append(pdu)

    def retry_later(self, conn: _Conn, pdu: P.DeliverSm, delay: float = 1.0) -> None:
        self._spawn(self._send_later(conn, delay, pdu))

    def flush_held(self, conn: _Conn) -> None:
        held, self.held = self.held, []
        for pdu in held:
            self.redelivered += 1
            conn.send_request(pdu)

    async def deliver_mo(self, sender: str, recipient: str, text: str) -> None:
        receivers = [c for c in self.sessions if c.can_receive]
        if not receivers:
            self.mo_undelivered += 1
            log.info("sim_smpp_mo_undeliverable")
            return
        self._mo_rr += 1
        target = receivers[self._mo_rr % len(receivers)]
        for pdu in make_mo_deliver(sender=sender.lstrip("+"), recipient=recipient, text=text):
            target.send_request(pdu)
        await target.writer.drain()
