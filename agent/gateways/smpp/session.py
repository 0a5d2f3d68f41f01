"""One SMPP connection as an ESME: framing, request/response matching, keep-alive, inbound PDUs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

import structlog

from agent.errors import PduError
from agent.gateways.smpp import pdu as P

log = structlog.get_logger(__name__)

# Called for every deliver_sm; returns the command_status to answer it with.
DeliverHandler = Callable[[P.DeliverSm], Awaitable[int]]


class ConnectionLost(Exception):
    """The connection closed (or was closed) while a request was outstanding."""


class ResponseTimeout(Exception):
    """No response within the response timeout; the session is closed because of it."""


class Session:
    """A connected socket speaking SMPP. ``request`` writes a PDU and awaits its response; the
    read loop answers enquire_link, unbind and deliver_sm itself. Any failure closes the whole
    session: SMPP has no way to resynchronise a stream, and the client rebinds instead."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_deliver: DeliverHandler,
        response_timeout: float,
        enquire_link_interval: float | None,
        gateway: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_deliver = on_deliver
        self._response_timeout = response_timeout
        self._enquire_interval = enquire_link_interval
        self._gateway = gateway
        self._framer = P.PduReader()
        self._pending: dict[int, asyncio.Future[P.Pdu]] = {}
        self._seq = 0
        self._closed = asyncio.Event()
        self._close_reason = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._read_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        # The first PDU of a turn of the event loop leaves at once (a submit_sm must not wait
        # for whatever else runs in this turn); those written after it in the same turn leave
        # together in one send() at its end: with a window of submits and their receipts'
        # answers in flight, one system call per PDU is most of the cost on a busy machine.
        self._out: list[bytes] = []
        self._turn_open = False  # a PDU went this turn: later ones wait for ``_flush``

    # -- lifecycle ---------------------------------------------------------------------------

    def start_reading(self) -> None:
        self._read_task = asyncio.create_task(self._read_loop(), name=f"smpp-read-{self._gateway}")

    def start_keepalive(self) -> None:
        if self._enquire_interval:
            self._keepalive_task = asyncio.create_task(
                self._keepalive(self._enquire_interval), name=f"smpp-keepalive-{self._gateway}"
            )

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self, reason: str) -> None:
        """Idempotent. Fails every outstanding request with ConnectionLost."""
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(reason))
                fut.exception()  # waiters see it through shield(); nobody else must be told
        self._pending.clear()
        self._flush()
        self._writer.close()
        current = asyncio.current_task()
        for task in (self._read_task, self._keepalive_task):
            if task is not None and task is not current:
                task.cancel()

    async def unbind(self, timeout: float = 1.0) -> None:
        """Polite close: unbind, wait briefly for unbind_resp, then close."""
        if not self.closed:
            with contextlib.suppress(ConnectionLost, ResponseTimeout, OSError):
                await self.request(P.Unbind(0), timeout=timeout)
        self.close("unbound")
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    # -- requests ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        # Sequence numbers run 0x00000001..0x7FFFFFFF (section 5.1.4).
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def send(self, pdu: P.Pdu) -> asyncio.Future[P.Pdu]:
        """Number and write a request; the future resolves with its response. Raises
        ConnectionLost without writing anything when the session is already closed."""
        if self.closed:
            raise ConnectionLost(self._close_reason or "closed")
        seq = self._next_seq()
        data = P.encode(dataclasses.replace(pdu, sequence=seq))
        fut: asyncio.Future[P.Pdu] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        self._queue(data)
        return fut

    def send_frame(self, frame: bytes) -> asyncio.Future[P.Pdu]:
        """``send`` for a request already encoded (with sequence 0): only its sequence number
        is written in, so a multi-part text is encoded once, before its first part goes."""
        if self.closed:
            raise ConnectionLost(self._close_reason or "closed")
        seq = self._next_seq()
        fut: asyncio.Future[P.Pdu] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        self._queue(frame[:12] + seq.to_bytes(4, "big") + frame[16:])
        return fut

    async def wait_response(
        self, fut: asyncio.Future[P.Pdu], timeout: float | None = None
    ) -> P.Pdu:
        limit = timeout or self._response_timeout
        try:
            return await asyncio.wait_for(asyncio.shield(fut), limit)
        except TimeoutError:
            # A peer that stops answering one request cannot be trusted with the others.
            self.close("response timeout")
            raise ResponseTimeout(f"no response within {limit}s") from None

    async def request(self, pdu: P.Pdu, timeout: float | None = None) -> P.Pdu:
        fut = self.send(pdu)
        await self.drain()
        return await self.wait_response(fut, timeout)

    def _queue(self, data: bytes) -> None:
        if self._turn_open:
            self._out.append(data)
            return
        self._turn_open = True
        asyncio.get_running_loop().call_soon(self._flush)
        if not self._writer.is_closing():
            self._writer.write(data)

    def _flush(self) -> None:
        self._turn_open = False
        if self._out and not self._writer.is_closing():
            self._writer.write(b"".join(self._out))
        self._out.clear()

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self.close(f"write failed: {exc.__class__.__name__}")

    def _write_now(self, pdu: P.Pdu) -> None:
        if not self.closed:
            self._queue(P.encode(pdu))

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "closed by peer"
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for frame in self._framer.feed(data):
                    self._handle_frame(frame)
        except PduError as exc:
            reason = f"framing error: {exc}"
            log.warning("smpp_protocol_violated", gateway=self._gateway, error=str(exc))
        except (ConnectionError, OSError) as exc:
            reason = f"read failed: {exc.__class__.__name__}"
        finally:
            self.close(reason)

    def _handle_frame(self, frame: bytes) -> None:
        try:
            pdu = P.decode(frame)
        except PduError as exc:
            _, command_id, _, seq = P.peek_header(frame)
            log.warning("smpp_pdu_rejected", gateway=self._gateway, error=str(exc))
            fut = self._pending.pop(seq, None) if command_id & 0x80000000 else None
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            else:
                self._write_now(P.GenericNack(seq, P.ESME_RINVCMDLEN))
            return
        if pdu.command_id & 0x80000000 or isinstance(pdu, P.UnknownPdu):
            self._handle_response(pdu)
        elif isinstance(pdu, P.EnquireLink):
            self._write_now(P.EnquireLinkResp(pdu.sequence))
        elif isinstance(pdu, P.DeliverSm):
            task = asyncio.create_task(self._deliver(pdu))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(pdu, P.Unbind):
            self._write_now(P.UnbindResp(pdu.sequence))
            self.close("unbound by peer")
        else:  # a bind or submit_sm sent to us: we are the ESME, the SMSC must not do that
            self._write_now(P.GenericNack(pdu.sequence, P.ESME_RINVCMDID))

    def _handle_response(self, pdu: P.Pdu) -> None:
        if isinstance(pdu, P.UnknownPdu):
            if not pdu.raw_command_id & 0x80000000:
                self._write_now(P.GenericNack(pdu.sequence, P.ESME_RINVCMDID))
                return
        fut = self._pending.pop(pdu.sequence, None)
        if fut is None:
            log.debug("smpp_response_unmatched", gateway=self._gateway, sequence=pdu.sequence)
        elif not fut.done():
            fut.set_result(pdu)

    async def _deliver(self, pdu: P.DeliverSm) -> None:
        try:
            status = await self._on_deliver(pdu)
        except Exception:  # the SMSC redelivers on a temporary error; the loop must live on
            log.exception("smpp_deliver_failed", gateway=self._gateway)
            status = P.ESME_RX_T_APPN
        self._write_now(P.DeliverSmResp(pdu.sequence, status))

    async def _keepalive(self, interval: float) -> None:
        with contextlib.suppress(ConnectionLost, asyncio.CancelledError):
            while not self.closed:
                await asyncio.sleep(interval)
                try:
                    await self.request(P.EnquireLink(0))
                except ResponseTimeout:
                    log.warning("smpp_keepalive_failed", gateway=self._gateway)
                    return
