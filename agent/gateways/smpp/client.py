"""SMPP 3.4 gateway (ESME side): bind, reconnect, window, TPS, submit outcomes, receipts, MO."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl as ssl_
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

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
from agent.gateways.smpp.link import BindRefused, Link, bind
from agent.gateways.smpp.session import ConnectionLost, ResponseTimeout, Session
from agent.gateways.pacing import RateLimiter
from agent.gateways.smpp.config import SmppConfig
from agent.gateways.smpp.inbound import Deliveries
from agent.gateways.smpp.outbound import SubmitShape
from agent.logs import mask_number
from agent.models import OutboundSms, SubmitResult

log = structlog.get_logger(__name__)

Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
Sleep = Callable[[float], Awaitable[None]]


class SmppGateway:
    """A Gateway over one or more SMPP binds (see ``SmppConfig``), rebinding each for as long
    as it runs. Submits go round the sending binds that are up; each bind has its own window,
    the TPS limit is shared by all of them."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        system_type: str = "",
        bind: str = "transceiver",  # transceiver | transmitter | split (TX binds + one RX)
        binds: int = 1,
        source_addr_ton: int | None = None,  # None: from each message's sender
        source_addr_npi: int | None = None,
        dest_addr_ton: int = 1,
        dest_addr_npi: int = 1,
        window: int = 10,
        tps: float | None = None,
        dlt_tlvs: Mapping[str, int] | None = None,
        dlt_chain_id: str | None = None,
        message_payload: bool = False,
        ssl: ssl_.SSLContext | None = None,
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
        if bind not in ("transceiver", "transmitter", "split") or binds < 1:
            raise ConfigError(f"gateway {name}: bind: transceiver, transmitter or split, binds >= 1")
        try:  # fail at start-up, not at every bind attempt; the message never shows the value
            P.encode(P.BindTransceiver(0, system_id=system_id, password=password,
                                       system_type=system_type))
        except PduError as exc:
            raise ConfigError(f"gateway {name}: {exc.field}: {exc} (SMPP 3.4 limit)") from None
        self.name = name
        self._host, self._port = host, port
        self._system_id, self._password, self._system_type = system_id, password, system_type
        send_kind: P.BindType = P.BindTransceiver if bind == "transceiver" else P.BindTransmitter
        self._links = [Link(i, send_kind, True, asyncio.Semaphore(window)) for i in range(binds)]
        if bind == "split":
            self._links.append(Link(binds, P.BindReceiver, False, asyncio.Semaphore(1)))
        self._next_link = 0
        #: Unacknowledged submits allowed on the gateway (every sending bind's window); the
        #: dispatcher claims no more rows than this, so a row waiting for a window slot is
        #: still plainly queued, not in flight.
        self.window = window * binds
        self._shape = SubmitShape.of(
            source_addr_ton=source_addr_ton, source_addr_npi=source_addr_npi,
            dest_addr_ton=dest_addr_ton, dest_addr_npi=dest_addr_npi,
            message_payload=message_payload, dlt_tlvs=dlt_tlvs, dlt_chain_id=dlt_chain_id)
        self._limiter = RateLimiter(tps, clock=clock, sleep=sleep) if tps else None
        self._enquire = enquire_link_interval
        self._response_timeout = response_timeout
        self._bind_timeout = bind_timeout
        self._backoff = backoff
        self._throttle_backoff = throttle_backoff
        self._throttle_give_up = throttle_give_up
        self._submit_wait = response_timeout if submit_wait is None else submit_wait
        if connector is None:
            async def connector(h: str, p: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection(h, p, ssl=ssl)
        self._connector: Connector = connector
        self._rng = rng or random.Random()
        self._sleep, self._clock = sleep, clock
        self._bound = asyncio.Event()  # set while at least one sending bind is up
        self._attempt_failed = asyncio.Event()  # replaced by a fresh one after each failure
        self._last_error: GatewayError | None = None
        self._paused_until = 0.0
        self._ref = self._rng.randrange(256)
        self._closing = False
        self._deliveries = Deliveries(name, clock)

    @classmethod
    def from_config(cls, name: str, cfg: SmppConfig, **options: Any) -> SmppGateway:
        """The gateway rules.yaml describes (``options``: timing seams for tests)."""
        context = None
        if cfg.tls:
            context = ssl_.create_default_context(cafile=cfg.tls_ca)
            if not cfg.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl_.CERT_NONE
        kwargs: dict[str, Any] = dict(
            system_type=cfg.system_type, bind=cfg.bind, binds=cfg.binds,
            source_addr_ton=cfg.source_addr_ton, source_addr_npi=cfg.source_addr_npi,
            window=cfg.window, tps=cfg.tps, dlt_tlvs=cfg.tlvs, dlt_chain_id=cfg.dlt_chain_id,
            message_payload=cfg.message_payload, ssl=context,
            enquire_link_interval=cfg.enquire_link.total_seconds() or None,
        )
        return cls(name, cfg.host, cfg.port, cfg.system_id,
                   cfg.password.get_secret_value() if cfg.password else "",
                   **{**kwargs, **options})

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}"
        return f"SmppGateway({self.name!r}, {where}, system_id={self._system_id!r})"

    @property
    def _session(self) -> Session | None:
        """The first sending bind's session (tests cut it to see a rebind)."""
        return self._links[0].session

    # -- Gateway protocol --------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return any(link.up for link in self._links if link.sends)

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        self._deliveries.start(on_receipt, on_inbound)
        self._closing = False
        for link in self._links:
            link.task = asyncio.create_task(self._run(link),
                                            name=f"smpp-{self.name}-{link.role}-{link.index}")

    async def wait_ready(self, timeout: float) -> None:
        """Return once a sending bind is up. Raises the error of the next failed attempt
        (BindRefused for a refused bind) or GatewayTemporaryError when ``timeout`` passes."""
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
        tasks = [link.task for link in self._links if link.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for link in self._links:
            if link.session is not None:
                await link.session.unbind()
                link.session = None
        self._bound.clear()

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        self._ref = (self._ref + 1) % 256
        try:  # refuse an unencodable message before any part goes
            frames = self._shape.frames(sms, ref=self._ref, now=datetime.now(UTC))
        except PduError as exc:
            raise GatewayPermanentError(f"{self.name}: {exc}", reason="invalid_message") from exc
        ids: list[str] = []
        for index, frame in enumerate(frames):
            try:
                ids.append(await self._submit_part(frame, first=index == 0))
            except GatewayError as exc:
                log.warning(
                    "smpp_submit_failed", gateway=self.name, message_id=sms.message_id,
                    to=mask_number(sms.to), part=index + 1, parts=len(frames),
                    reason=exc.reason, code=exc.code, error=str(exc),
                )
                if ids and isinstance(exc, GatewayTemporaryError):
                    # Earlier parts are at the SMSC: resending the whole text would duplicate
                    # them on the handset, so the dispatcher must not retry it blindly.
                    raise GatewayAmbiguousError(
                        f"{self.name}: parts 1..{len(ids)} of {len(frames)} accepted "
                        f"({', '.join(ids)}), then: {exc}", code=exc.code, reason="partial"
                    ) from exc
                raise
        log.debug("smpp_submitted", gateway=self.name, message_id=sms.message_id,
                  smsc_ids=ids, to=mask_number(sms.to))
        return SubmitResult(message_id=sms.message_id, smsc_ids=tuple(ids), segments=len(frames))

    # -- submitting one PDU ------------------------------------------------------------------

    async def _link_for_submit(self, deadline: float) -> Link:
        while True:
            senders = [link for link in self._links if link.sends]
            for _ in range(len(senders)):
                link = senders[self._next_link % len(senders)]
                self._next_link += 1
                if link.up:
                    return link
            remaining = deadline - self._clock()
            if remaining <= 0 or self._closing:
                why = self._last_error or "no connection"
                raise GatewayTemporaryError(f"{self.name}: not bound ({why})", reason="not_bound")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bound.wait(), remaining)

    async def _submit_part(self, frame: bytes, *, first: bool) -> str:
        """Submit one encoded submit_sm (sequence 0: the session numbers it)."""
        started = self._clock()
        # Later parts wait longer for a rebind: giving up on them strands the earlier ones.
        wait = self._submit_wait if first else max(self._submit_wait, self._throttle_give_up)
        throttled = 0
        while True:
            link = await self._link_for_submit(started + wait)
            async with link.window:
                pause = self._paused_until - self._clock()
                if pause > 0:
                    await self._sleep(pause)
                session = link.session
                if session is None or session.closed:
                    continue  # the bind went down while we waited for its window
                # Paced only once bound: submits that waited out an outage must not all go
                # in the first instant after the rebind (they took their slots long ago).
                if self._limiter is not None:
                    await self._limiter.acquire()
                try:
                    fut = session.send_frame(frame)
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

    def _link_changed(self) -> None:
        if self.healthy:
            self._bound.set()
        else:
            self._bound.clear()

    async def _run(self, link: Link) -> None:
        attempt = 0
        while not self._closing:
            try:
                session = await self._connect_and_bind(link)
            except (GatewayError, OSError, TimeoutError, PduError,
                    ConnectionLost, ResponseTimeout) as exc:
                err = exc if isinstance(exc, GatewayError) else GatewayTemporaryError(
                    f"{self.name}: cannot bind to {self._host}:{self._port}: "
                    f"{exc.__class__.__name__}: {exc}", reason="connect_failed")
                self._last_error = err
                refused = isinstance(err, BindRefused)
                event = "smpp_bind_refused" if refused else "smpp_connect_failed"
                log.warning(event, gateway=self.name, host=self._host, port=self._port,
                            bind=link.role, error=str(err), attempt=attempt + 1)
                self._attempt_failed.set()
                self._attempt_failed = asyncio.Event()
                await self._sleep(backoff_delay(attempt, *self._backoff, rand=self._rng.random))
                attempt += 1
                continue
            attempt = 0
            self._last_error = None
            link.session = session
            self._link_changed()
            log.info("smpp_bound", gateway=self.name, host=self._host, port=self._port,
                     system_id=self._system_id, bind=link.role, index=link.index)
            try:
                await session.wait_closed()
            finally:
                self._link_changed()
            if self._closing:
                return
            self._last_error = GatewayTemporaryError(
                f"{self.name}: connection lost: {session.close_reason}", reason="connection_lost")
            log.warning("smpp_connection_lost", gateway=self.name, bind=link.role,
                        reason=session.close_reason)
            await self._sleep(backoff_delay(0, *self._backoff, rand=self._rng.random))

    async def _connect_and_bind(self, link: Link) -> Session:
        reader, writer = await asyncio.wait_for(
            self._connector(self._host, self._port), self._bind_timeout
        )
        session = Session(
            reader, writer, on_deliver=self._deliveries,
            response_timeout=self._response_timeout, enquire_link_interval=self._enquire,
            gateway=self.name,
        )
        await bind(session, link, gateway=self.name, where=f"{self._host}:{self._port}",
                   system_id=self._system_id, password=self._password,
                   system_type=self._system_type, timeout=self._bind_timeout)
        return session
