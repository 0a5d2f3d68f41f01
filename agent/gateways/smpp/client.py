"""SMPP 3.4 gateway (ESME side): bind, reconnect, window, TPS, submit outcomes, receipts, MO."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog

from agent.backoff import backoff_delay
from agent.errors import (
    ConfigError,
    GatewayAmbiguousError,
    GatewayError,
    GatewayPermanentError,
    GatewayTemporaryError,
    PduError,
)
from agent.gateways.base import InboundHandler, ReceiptHandler
from agent.gateways.smpp import pdu as P
from agent.gateways.smpp.session import ConnectionLost, ResponseTimeout, Session
from agent.gateways.smpp.sm import is_receipt, make_submit_parts, receipt_from_deliver, sm_text
from agent.logs import mask_number
from agent.models import InboundSms, OutboundSms, SubmitResult

log = structlog.get_logger(__name__)

Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
Sleep = Callable[[float], Awaitable[None]]


class BindRefused(GatewayError):
    """The SMSC answered our bind with an error status (credentials, system_type, IP)."""


class RateLimiter:
    """Paces sends at ``rate`` per second (GCRA). The small tolerance lets a late timer catch
    up, so the long-run rate is the configured one rather than rate minus timer overshoot."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = asyncio.sleep, tolerance: float = 0.05) -> None:
        if rate <= 0:
            raise ValueError("tps: must be > 0")
        self._interval = 1.0 / rate
        self._tolerance = max(tolerance, self._interval)
        self._clock, self._sleep = clock, sleep
        self._tat = 0.0

    async def acquire(self) -> None:
        now = self._clock()
        start = max(self._tat, now - self._tolerance)
        self._tat = start + self._interval
        delay = start - now
        if delay > 0:
            await self._sleep(delay)


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


class SmppGateway:
    """A Gateway over one SMPP transceiver bind, rebinding for as long as it runs."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        system_type: str = "",
        source_addr_ton: int = 5,  # alphanumeric sender ids are the after-call norm
        source_addr_npi: int = 0,
        dest_addr_ton: int = 1,
        dest_addr_npi: int = 1,
        window: int = 10,
        tps: float | None = None,
        dlt_tlvs: Mapping[str, int] | None = None,
        enquire_link_interval: float | None = 30.0,
        response_timeout: float = 10.0,
        bind_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 10.0),  # rebind attempts: jittered, capped
        throttle_backoff: tuple[float, float] = (0.1, 5.0),
        throttle_give_up: float = 60.0,
        submit_wait: float | None = None,
        connector: Connector | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ConfigError(f"gateway {name}: window: must be >= 1")
        try:  # fail at start-up, not at every bind attempt; the message never shows the value
            P.encode(P.BindTransceiver(0, system_id=system_id, password=password,
                                       system_type=system_type))
        except PduError as exc:
            raise ConfigError(f"gateway {name}: {exc.field}: {exc} (SMPP 3.4 limit)") from None
        self.name = name
        self._host, self._port = host, port
        self._system_id, self._password, self._system_type = system_id, password, system_type
        self._src_ton, self._src_npi = source_addr_ton, source_addr_npi
        self._dst_ton, self._dst_npi = dest_addr_ton, dest_addr_npi
        #: Unacknowledged submits allowed on the bind; the dispatcher claims no more rows than
        #: this, so a row waiting for a window slot is still plainly queued, not in flight.
        self.window = window
        # The operator's TLV tags for India DLT ids (rules.yaml gateways.*.tlvs).
        tags = dict(dlt_tlvs or {})
        self._dlt_pe_tag = tags.get("dlt_entity_id", P.Tag.DLT_PE_ID)
        self._dlt_template_tag = tags.get("dlt_template_id", P.Tag.DLT_TEMPLATE_ID)
        self._window = asyncio.Semaphore(window)
        self._limiter = RateLimiter(tps, clock=clock, sleep=sleep) if tps else None
        self._enquire = enquire_link_interval
        self._response_timeout = response_timeout
        self._bind_timeout = bind_timeout
        self._backoff = backoff
        self._throttle_backoff = throttle_backoff
        self._throttle_give_up = throttle_give_up
        self._submit_wait = response_timeout if submit_wait is None else submit_wait
        self._connector: Connector = connector or asyncio.open_connection
        self._rng = rng or random.Random()
        self._sleep, self._clock = sleep, clock
        self._session: Session | None = None
        self._bound = asyncio.Event()
        self._attempt_failed = asyncio.Event()  # replaced by a fresh one after each failure
        self._last_error: GatewayError | None = None
        self._paused_until = 0.0
        self._ref = self._rng.randrange(256)
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._on_receipt: ReceiptHandler | None = None
        self._on_inbound: InboundHandler | None = None
        self._mo_parts = MoReassembler()

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}"
        return f"SmppGateway({self.name!r}, {where}, system_id={self._system_id!r})"

    # -- Gateway protocol --------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        self._on_receipt, self._on_inbound = on_receipt, on_inbound
        self._closing = False
        self._supervisor = asyncio.create_task(self._run(), name=f"smpp-{self.name}")

    async def wait_bound(self, timeout: float) -> None:
        """Return once bound. Raises the error of the next failed attempt (BindRefused for a
        refused bind) or GatewayTemporaryError when ``timeout`` passes first."""
        if self.healthy:
            return
        failed = self._attempt_failed
        waiters = [asyncio.ensure_future(self._bound.wait()), asyncio.ensure_future(failed.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self.healthy:
            return
        if failed.is_set() and self._last_error is not None:
            raise self._last_error
        raise GatewayTemporaryError(f"{self.name}: not bound within {timeout}s", reason="not_bound")

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._session is not None:
            await self._session.unbind()
            self._session = None
        self._bound.clear()

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        tlvs = dict(sms.tlvs)
        # India DLT ids go as octet strings in the operator TLVs; explicit tlvs win.
        if sms.dlt_entity_id:
            tlvs.setdefault(self._dlt_pe_tag, sms.dlt_entity_id.encode("ascii"))
        if sms.dlt_template_id:
            tlvs.setdefault(self._dlt_template_tag, sms.dlt_template_id.encode("ascii"))
        self._ref = (self._ref + 1) % 256
        try:
            parts = make_submit_parts(
                source_addr=sms.sender, destination_addr=sms.to.lstrip("+"), text=sms.text,
                ref=self._ref, source_addr_ton=self._src_ton, source_addr_npi=self._src_npi,
                dest_addr_ton=self._dst_ton, dest_addr_npi=self._dst_npi,
                registered_delivery=1 if sms.request_receipt else 0,
                tlvs=tuple(tlvs.items()),
            )
            for part in parts:
                P.encode(part)  # refuse an unencodable message before any part is sent
        except PduError as exc:
            raise GatewayPermanentError(f"{self.name}: {exc}", reason="invalid_message") from exc
        ids: list[str] = []
        for index, part in enumerate(parts):
            try:
                ids.append(await self._submit_part(part, first=index == 0))
            except GatewayError as exc:
                log.warning(
                    "smpp_submit_failed", gateway=self.name, message_id=sms.message_id,
                    to=mask_number(sms.to), part=index + 1, parts=len(parts),
                    reason=exc.reason, code=exc.code, error=str(exc),
                )
                if ids and isinstance(exc, GatewayTemporaryError):
                    # Earlier parts are at the SMSC: resending the whole text would duplicate
                    # them on the handset, so the dispatcher must not retry it blindly.
                    raise GatewayAmbiguousError(
                        f"{self.name}: parts 1..{len(ids)} of {len(parts)} accepted "
                        f"({', '.join(ids)}), then: {exc}", code=exc.code, reason="partial"
                    ) from exc
                raise
        log.debug("smpp_submitted", gateway=self.name, message_id=sms.message_id,
                  smsc_ids=ids, to=mask_number(sms.to))
        return SubmitResult(message_id=sms.message_id, smsc_ids=tuple(ids), segments=len(parts))

    # -- submitting one PDU ------------------------------------------------------------------

    async def _session_for_submit(self, deadline: float) -> Session:
        while True:
            session = self._session
            if session is not None and not session.closed:
                return session
            remaining = deadline - self._clock()
            if remaining <= 0 or self._closing:
                why = self._last_error or "no connection"
                raise GatewayTemporaryError(f"{self.name}: not bound ({why})", reason="not_bound")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bound.wait(), remaining)

    async def _submit_part(self, part: P.SubmitSm, *, first: bool) -> str:
        started = self._clock()
        # Later parts wait longer for a rebind: giving up on them strands the earlier ones.
        wait = self._submit_wait if first else max(self._submit_wait, self._throttle_give_up)
        throttled = 0
        while True:
            async with self._window:
                pause = self._paused_until - self._clock()
                if pause > 0:
                    await self._sleep(pause)
                session = await self._session_for_submit(started + wait)
                # Paced only once bound: submits that waited out an outage must not all go
                # in the first instant after the rebind (they took their slots long ago).
                if self._limiter is not None:
                    await self._limiter.acquire()
                try:
                    fut = session.send(part)
                except ConnectionLost as exc:
                    raise GatewayTemporaryError(
                        f"{self.name}: connection lost before submit ({exc})",
                        reason="connection_lost",
                    ) from exc
                await session.drain()
                try:
                    resp = await session.wait_response(fut)
                except ConnectionLost as exc:
                    raise GatewayAmbiguousError(
                        f"{self.name}: connection lost after submit_sm was written ({exc})",
                        reason="connection_lost",
                    ) from exc
                except ResponseTimeout as exc:
                    raise GatewayAmbiguousError(
                        f"{self.name}: {exc} to submit_sm", reason="response_timeout"
                    ) from exc
                except PduError as exc:
                    raise GatewayAmbiguousError(
                        f"{self.name}: unreadable submit_sm_resp: {exc}", reason="bad_response"
                    ) from exc
            status = resp.command_status
            name = P.status_name(status)
            if isinstance(resp, P.SubmitSmResp) and status == P.ESME_ROK:
                return resp.message_id
            if status == P.ESME_ROK:  # generic_nack with status 0 or a mismatched resp type
                raise GatewayAmbiguousError(
                    f"{self.name}: unexpected {type(resp).__name__} to submit_sm",
                    reason="bad_response",
                )
            if status in P.THROTTLING:
                elapsed = self._clock() - started
                if elapsed >= self._throttle_give_up:
                    raise GatewayTemporaryError(
                        f"{self.name}: still throttled ({name}) after {elapsed:.1f}s",
                        code=status, reason="throttled",
                    )
                delay = backoff_delay(throttled, *self._throttle_backoff, rand=self._rng.random)
                throttled += 1
                # Pause every sender, not just this one: the SMSC limit is per bind.
                self._paused_until = max(self._paused_until, self._clock() + delay)
                log.info("smpp_throttled", gateway=self.name, status=name, pause=round(delay, 3))
                continue
            kind = P.classify_status(status)
            if kind == "retry":
                raise GatewayTemporaryError(
                    f"{self.name}: SMSC refused submit_sm with {name}", code=status, reason=name
                )
            raise GatewayPermanentError(
                f"{self.name}: SMSC rejected submit_sm with {name}", code=status, reason=name
            )

    # -- connection supervisor ---------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                session = await self._connect_and_bind()
            except (GatewayError, OSError, TimeoutError, PduError,
                    ConnectionLost, ResponseTimeout) as exc:
                err = exc if isinstance(exc, GatewayError) else GatewayTemporaryError(
                    f"{self.name}: cannot bind to {self._host}:{self._port}: "
                    f"{exc.__class__.__name__}: {exc}", reason="connect_failed")
                self._last_error = err
                refused = isinstance(err, BindRefused)
                event = "smpp_bind_refused" if refused else "smpp_connect_failed"
                log.warning(event, gateway=self.name, host=self._host, port=self._port,
                            error=str(err), attempt=attempt + 1)
                self._attempt_failed.set()
                self._attempt_failed = asyncio.Event()
                await self._sleep(backoff_delay(attempt, *self._backoff, rand=self._rng.random))
                attempt += 1
                continue
            attempt = 0
            self._last_error = None
            self._session = session
            self._bound.set()
            log.info("smpp_bound", gateway=self.name, host=self._host, port=self._port,
                     system_id=self._system_id)
            try:
                await session.wait_closed()
            finally:
                self._bound.clear()
            if self._closing:
                return
            self._last_error = GatewayTemporaryError(
                f"{self.name}: connection lost: {session.close_reason}", reason="connection_lost")
            log.warning("smpp_connection_lost", gateway=self.name, reason=session.close_reason)
            await self._sleep(backoff_delay(0, *self._backoff, rand=self._rng.random))

    async def _connect_and_bind(self) -> Session:
        reader, writer = await asyncio.wait_for(
            self._connector(self._host, self._port), self._bind_timeout
        )
        session = Session(
            reader, writer, on_deliver=self._on_deliver,
            response_timeout=self._response_timeout, enquire_link_interval=self._enquire,
            gateway=self.name,
        )
        session.start_reading()
        try:
            resp = await session.request(
                P.BindTransceiver(0, system_id=self._system_id, password=self._password,
                                  system_type=self._system_type),
                timeout=self._bind_timeout,
            )
        except BaseException:
            session.close("bind failed")
            raise
        if resp.command_status != P.ESME_ROK or not isinstance(resp, P.BindTransceiverResp):
            session.close("bind refused")
            name = P.status_name(resp.command_status)
            raise BindRefused(
                f"{self.name}: SMSC {self._host}:{self._port} refused bind_transceiver for "
                f"system_id {self._system_id!r}: {name}",
                code=resp.command_status, reason="bind_refused",
            )
        session.start_keepalive()
        return session

    # -- inbound -----------------------------------------------------------------------------

    async def _on_deliver(self, pdu: P.DeliverSm) -> int:
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
