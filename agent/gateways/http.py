"""The HTTP SMS gateway driver: one aiohttp shell around the pure presets (Kannel, Jasmin, Twilio, generic).

Retries stay inside ``submit`` while they are short: 429, 5xx (but 504) and connection
failures before the request left this host are retried with capped, jittered exponential
backoff, honouring ``Retry-After``; when retries run out, or the gateway asks for a wait longer
than the backoff cap, ``GatewayTemporaryError`` goes to the dispatcher, which owns long waits.
Anything that fails after the request was written (a read timeout, a dropped connection, a 504)
is ``GatewayAmbiguousError``: the gateway may have taken the message, so it is never resent.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import structlog

from agent.backoff import backoff_delay
from agent.errors import (
    GatewayAmbiguousError,
    GatewayError,
    GatewayTemporaryError,
    star_out,
)
from agent.gateways.base import InboundHandler, ReceiptHandler
from agent.gateways.pacing import RateLimiter
from agent.gateways.presets import PRESETS
from agent.gateways.presets.common import (
    HttpGatewayConfig,
    HttpRequest,
    Preset,
    mask_url,
)
from agent.logs import mask_number
from agent.models import InboundSms, OutboundSms, Receipt, SubmitResult
from agent.sms.encoding import analyze

__all__ = ["HttpGateway", "HttpGatewayConfig", "Preset", "parse_retry_after"]

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 256 * 1024


#: The longest Retry-After taken as said: a day (the message's expiry usually ends it sooner).
#: A gateway's 10**17 seconds or year 9999 overflowed the retry's time and stopped the send.
MAX_RETRY_AFTER = 86_400.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date), at most
    ``MAX_RETRY_AFTER``."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which float() refuses
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_RETRY_AFTER)


def basic_auth_header(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


class _Transport(Exception):
    """A request failed below HTTP; ``sent`` says whether it had been written."""

    def __init__(self, what: str, *, sent: bool):
        self.sent = sent
        super().__init__(what)


async def _on_headers_sent(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any
) -> None:
    if ctx.trace_request_ctx is not None:
        ctx.trace_request_ctx.sent = True


class HttpGateway:
    """An SMS gateway reached over HTTP. Receipts and replies arrive through the agent's web
    server (see ``agent.gateways.webhooks``), which hands them to ``dispatch_receipt`` /
    ``dispatch_inbound``; those call the handlers given to ``start``."""

    def __init__(
        self,
        config: HttpGatewayConfig,
        *,
        connector: aiohttp.BaseConnector | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.name
        self._preset = PRESETS[config.preset]
        self._connector = connector
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._on_receipt: ReceiptHandler | None = None
        self._on_inbound: InboundHandler | None = None
        self._healthy = True
        self._closed = False
        # rules.yaml tps: the gateway's own rate limit, kept here rather than learnt from 429s.
        self._limiter = RateLimiter(config.tps, clock=clock, sleep=sleep) if config.tps else None
        secrets = [s.get_secret_value() for s in (config.password, config.auth_token,
                                                  config.webhook_secret) if s is not None]
        secrets += [v.get_secret_value() for v in config.headers.values()]
        self._secrets = [s for s in secrets if s]

    # -- Gateway protocol ----------------------------------------------------------------------

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        self._on_receipt, self._on_inbound = on_receipt, on_inbound
        self._ensure_session()
        log.info("http_gateway_started", gateway=self.name, preset=self.config.preset.value,
                 url=mask_url(self.config.endpoint))

    @property
    def healthy(self) -> bool:
        return self._healthy and not self._closed

    @property
    def window(self) -> int:
        """Requests in flight at once (HTTP has no window of its own; ``tps`` paces them)."""
        return 10

    async def wait_ready(self, timeout: float) -> None:
        """No connection to wait for: the next submit is the probe that finds the gateway
        back (it is what turns ``healthy`` true again)."""
        return None

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        if self._closed:
            raise GatewayTemporaryError(f"gateway {self.name}: closed", reason="closed")
        request = self._preset.build_submit(self.config, sms)
        segments = sms.segments or analyze(sms.text).segments
        initial, cap = self.config.backoff
        attempt = 0
        while True:
            retry_after: float | None = None
            if self._limiter is not None:
                await self._limiter.acquire()
            try:
                status, headers, body = await self._send(request)
            except _Transport as exc:
                if exc.sent:
                    self._healthy = False
                    err = GatewayAmbiguousError(
                        f"gateway {self.name}: {exc} after the request was sent; "
                        "it may have been accepted", reason="no_response")
                    self._log_failed(sms, err, attempt)
                    raise err from None
                error: GatewayError = GatewayTemporaryError(
                    f"gateway {self.name}: {exc}", reason="connection_failed")
            else:
                try:
                    smsc_id = self._preset.parse_submit(self.config, status, headers, body)
                except GatewayTemporaryError as exc:
                    error = self._scrubbed(exc)
                    retry_after = parse_retry_after(headers.get("Retry-After"))
                except GatewayError as exc:
                    err2 = self._scrubbed(exc)
                    # Refused credentials stop every message, a bad number only its own.
                    self._healthy = not (isinstance(exc, GatewayAmbiguousError)
                                         or exc.reason == "auth_failed")
                    self._log_failed(sms, err2, attempt)
                    raise err2 from None
                else:
                    self._healthy = True
                    log.debug("http_submit_accepted", gateway=self.name,
                              message_id=sms.message_id, smsc_id=smsc_id, attempts=attempt + 1)
                    return SubmitResult(message_id=sms.message_id,
                                        smsc_ids=(smsc_id,) if smsc_id else (),
                                        segments=segments)
            if retry_after is not None and isinstance(error, GatewayTemporaryError):
                error.retry_after = retry_after  # the dispatcher waits at least this long
            if attempt >= self.config.max_retries or (retry_after is not None and retry_after > cap):
                self._healthy = False
                self._log_failed(sms, error, attempt)
                raise error
            delay = backoff_delay(attempt, initial, cap, rand=self._rng.random)
            if retry_after is not None:
                delay = max(delay, retry_after)
            log.warning("http_submit_retried", gateway=self.name, message_id=sms.message_id,
                        to=mask_number(sms.to), attempt=attempt + 1, delay=round(delay, 3),
                        code=error.code, reason=error.reason)
            await self._sleep(delay)
            attempt += 1

    # -- receipts and replies from the web layer --------------------------------------------------

    async def dispatch_receipt(self, receipt: Receipt) -> None:
        if self._on_receipt is None:
            raise GatewayTemporaryError(f"gateway {self.name}: not started", reason="not_started")
        await self._on_receipt(receipt)

    async def dispatch_inbound(self, sms: InboundSms) -> None:
        if self._on_inbound is None:
            raise GatewayTemporaryError(f"gateway {self.name}: not started", reason="not_started")
        await self._on_inbound(sms)

    # -- internals -----------------------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            connector = self._connector or aiohttp.TCPConnector(
                limit=20, keepalive_timeout=self.config.keepalive_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector,
                connector_owner=self._connector is None,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.config.connect_timeout,
                    sock_read=self.config.timeout),
                trace_configs=[trace],
                raise_for_status=False,
            )
        return self._session

    async def _send(self, req: HttpRequest) -> tuple[int, Mapping[str, str], bytes]:
        session = self._ensure_session()
        progress = SimpleNamespace(sent=False)
        kwargs: dict[str, Any] = {"params": list(req.query) or None, "headers": dict(req.headers),
                                  "trace_request_ctx": progress, "allow_redirects": False}
        if req.form is not None:
            kwargs["data"] = list(req.form)
        if req.json is not None:
            kwargs["json"] = req.json
        if req.basic_auth is not None:
            kwargs["headers"]["Authorization"] = basic_auth_header(*req.basic_auth)
        # sock_read bounds a silent server; this bounds a server that never reads our body.
        deadline = self.config.connect_timeout + self.config.timeout + 1.0
        try:
            async with asyncio.timeout(deadline):
                async with session.request(req.method, req.url, **kwargs) as resp:
                    body = bytearray()
                    while len(body) < MAX_RESPONSE_BYTES:
                        chunk = await resp.content.read(MAX_RESPONSE_BYTES - len(body))
                        if not chunk:
                            break
                        body += chunk
                    return resp.status, resp.headers, bytes(body)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _Transport("timed out", sent=progress.sent) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Transport(f"cannot connect ({exc.os_error.strerror or 'refused'})",
                             sent=False) from None
        except aiohttp.ServerDisconnectedError:
            raise _Transport("server closed the connection", sent=progress.sent) from None
        except aiohttp.ClientError as exc:
            # The exception text may quote the request URL, credentials and all.
            raise _Transport(f"{type(exc).__name__}", sent=progress.sent) from None
        except OSError as exc:
            raise _Transport(f"{type(exc).__name__}: {exc.strerror}", sent=progress.sent) from None

    def _scrubbed(self, exc: GatewayError) -> GatewayError:
        """The same error with any secret echoed back by the gateway blanked out."""
        text = str(exc)
        for s in self._secrets:
            text = star_out(s, text)
        if text == str(exc):
            return exc
        return type(exc)(text, code=exc.code, reason=exc.reason)

    def _log_failed(self, sms: OutboundSms, err: GatewayError, attempt: int) -> None:
        log.warning("http_submit_failed", gateway=self.name, message_id=sms.message_id,
                    to=mask_number(sms.to), attempts=attempt + 1, code=err.code,
                    reason=err.reason, error=type(err).__name__)
