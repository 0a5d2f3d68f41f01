"""The AMI link: panoramisk's framing and parser, with the lifecycle aftercall needs around it.

panoramisk's ``Manager`` retries a refused login forever in silence, never notices a missing
Pong, reconnects at a fixed delay, queues actions while disconnected, and runs event callbacks
inside ``data_received`` (a slow or failing callback stalls or breaks the reader). This wrapper
keeps panoramisk's protocol and message parsing and replaces the rest:

- ``connect()`` returns only once logged in; a refused login raises ``AmiLoginError``;
- liveness is judged by bytes: any byte received proves the link alive. A Ping is sent only
  after ``ping_interval`` of silence, and the link is declared dead only when nothing at all
  arrived within ``ping_timeout`` after it (a busy agent whose Pong waits behind unread events
  is not a dead link). Every disconnect is logged once, with its cause;
- reconnects use capped, jittered backoff; after each (re)login ``on_login`` runs (the agent
  resyncs calls in progress with CoreShowChannels there);
- every action has a timeout; actions while disconnected fail fast with ``AmiDisconnected``;
- the reader only parses and enqueues; nothing read is ever dropped. When the consumer falls
  ``queue_size`` events behind, the socket is no longer read (back-pressure) until it has caught
  up to half of that. Asterisk may then drop the link after its ``writetimeout``: the gap then
  starts when reading stopped (``stats.disconnected_at``), and the agent's CDR reconciliation
  recovers the calls that ended in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from panoramisk import Manager
from panoramisk.message import Message

from agent.ami.config import AmiConfig
from agent.ami.framing import BoundedAMIProtocol
from agent.ami.privileges import describe, excess_write_actions
from agent.backoff import Backoff
from agent.errors import AmiDisconnected, AmiError, AmiLoginError, AmiTimeout

log = structlog.get_logger("aftercall.ami")

_SECRET_RE = re.compile(r"(Secret['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n,]+)", re.IGNORECASE)


class _RedactSecrets(logging.Filter):
    """panoramisk logs actions (Login included) in some error paths: never let a secret out."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "ecret" in msg:
            record.msg = _SECRET_RE.sub(r"\1***", msg)
            record.args = ()
        return True


_pano_log = logging.getLogger("aftercall.panoramisk")
_pano_log.addFilter(_RedactSecrets())
for _name in ("panoramisk", "panoramisk.manager", "panoramisk.ami_protocol"):
    logging.getLogger(_name).addFilter(_RedactSecrets())


@dataclass
class AmiStats:
    connected: bool = False
    logins: int = 0
    reconnects: int = 0
    events: int = 0
    dropped: int = 0  # stays 0: a full queue stops the reading instead (kept for /metrics)
    paused: int = 0  # times reading stopped for the consumer to catch up
    handler_errors: int = 0
    disconnected_at: float | None = None  # wall clock of the last loss of the connection
    version: str | None = None
    last_error: str | None = None
    #: Actions the user may run that aftercall never needs (ListCommands at each login).
    excess_write: tuple[str, ...] = ()


class _Protocol(BoundedAMIProtocol):
    """The bounded AMI protocol (agent.ami.framing), noting when bytes last arrived."""

    client: AmiClient | None = None

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client._last_rx = time.monotonic()
        super().data_received(data)
        if client is not None and self.transport.is_closing() and client._drop_cause is None:
            # The framing ended the link (agent.ami.framing): say so, not "closed by peer".
            client._drop_cause = f"an AMI message over {self.max_message} bytes"


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with its reconnect logic and synchronous dispatch cut out."""

    def __init__(self, client: AmiClient, **config: Any) -> None:
        super().__init__(**config)
        self._client = client

    def connection_lost(self, exc: object) -> None:
        self._connected = False
        if self._client._manager is self:  # not a connection the client already let go of
            self._client._connection_lost(exc)

    def dispatch(self, event: Message) -> list[str]:
        self._client._enqueue(event)
        return []


LoginHook = Callable[["AmiClient"], Awaitable[None]]


class AmiClient:
    def __init__(self, config: AmiConfig, *, on_login: LoginHook | None = None,
                 backoff: Backoff | None = None) -> None:
        config.check()
        self.config = config
        self.on_login = on_login
        self.backoff = backoff or Backoff(config.backoff_initial, config.backoff_max)
        self.stats = AmiStats()
        # Unbounded: the bound (queue_size) is kept by pausing the reader, never by dropping.
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self._manager: _Manager | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._closing = False
        self._gap_since: float | None = None
        self._last_rx = time.monotonic()
        self._paused_at: float | None = None  # wall clock when reading stopped; None: reading
        # Wall clock when the reader first stopped since the consumer was last fully caught up:
        # a link Asterisk dropped meanwhile may have lost events from then on (its EOF is only
        # read once the bytes before it were).
        self._behind_since: float | None = None
        self._resumed_at = 0.0  # monotonic
        self._drop_cause: str | None = None

    # -- connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.stats.connected

    async def connect(self) -> None:
        """Open the TCP (or TLS) connection and log in; return only once logged in."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        mgr = _Manager(self, host=cfg.host, port=cfg.port, username=cfg.username,
                       secret=cfg.secret, ssl=cfg.tls, loop=loop,
                       log=_pano_log, ping_delay=10**6)
        ctx: ssl.SSLContext | bool = ssl.create_default_context() if cfg.tls else False
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, cfg.host, cfg.port, ssl=ctx or None),
                cfg.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as e:
            raise AmiDisconnected(
                f"cannot connect to AMI at {cfg.host}:{cfg.port}: {e or 'timed out'}"
            ) from e
        # Wire the protocol the way Manager.connection_made does, minus its login/pinger.
        protocol.queue = deque()
        protocol.client = self
        self._last_rx = time.monotonic()
        self._paused_at = None
        self._behind_since = None
        self._drop_cause = None
        protocol.factory = mgr
        protocol.log = _pano_log
        protocol.config = mgr.config
        protocol.encoding = mgr.encoding = "utf8"
        mgr.responses = protocol.responses = {}
        mgr.protocol = protocol
        mgr._connected = True
        self._manager = mgr
        self._lost = asyncio.Event()
        try:
            resp = await asyncio.wait_for(
                protocol.send({"Action": "Login", "Username": cfg.username,
                               "Secret": cfg.secret, "Events": "on"}),
                cfg.login_timeout,
            )
        except asyncio.TimeoutError as e:
            transport.close()
            raise AmiDisconnected(
                f"{cfg.host}:{cfg.port} did not answer an AMI Login within "
                f"{cfg.login_timeout:.0f}s (is it Asterisk's AMI port?)"
            ) from e
        if protocol.version is None:
            transport.close()
            raise AmiDisconnected(f"{cfg.host}:{cfg.port} is not an Asterisk AMI (no banner)")
        if not resp.success:
            transport.close()
            raise AmiLoginError(
                f"Asterisk refused the AMI login of user {cfg.username!r} at "
                f"{cfg.host}:{cfg.port}: {resp.get('Message', 'authentication failed')}. "
                "Check the secret and the user's permit/deny in manager.conf"
            )
        self.stats.connected = True
        self.stats.logins += 1
        self.stats.version = protocol.version
        if self._gap_since is not None:
            log.info("ami_reconnected", gap_s=round(time.monotonic() - self._gap_since, 3))
        log.info("ami_logged_in", host=cfg.host, port=cfg.port, version=protocol.version)

    def _connection_lost(self, exc: object) -> None:
        if self.stats.connected:
            self._gap_since = time.monotonic()
            # Facts may be missing from the moment reading stopped, not only from now.
            self.stats.disconnected_at = min(time.time(), self._behind_since or time.time())
            cause = self._drop_cause or (f"connection error: {exc}" if exc else "closed by peer")
            log.warning("ami_disconnected", cause=cause,
                        reading_paused=self._paused_at is not None,
                        behind_s=round(time.time() - self._behind_since, 3)
                        if self._behind_since else 0.0,
                        queued_events=self.queue.qsize())
        self.stats.connected = False
        # panoramisk parks unanswered actions for a resend we never do: fail them now.
        mgr = self._manager
        if mgr is not None:
            while mgr.awaiting_actions:
                pending = mgr.awaiting_actions.popleft()
                if not pending.future.done():
                    pending.future.set_exception(
                        AmiDisconnected(f"AMI connection lost before {pending['action']} answered"))
        self._lost.set()

    def _enqueue(self, event: Message) -> None:
        self.stats.events += 1
        self.queue.put_nowait(event)  # unbounded: the bound is enforced by pausing the reader
        if self._paused_at is None and self.queue.qsize() >= self.config.queue_size:
            mgr = self._manager
            if mgr is not None and mgr.protocol is not None:
                mgr.protocol.transport.pause_reading()
                self._paused_at = time.time()
                self._behind_since = self._behind_since or self._paused_at
                self.stats.paused += 1
                log.warning("ami_reading_paused", queued_events=self.queue.qsize(),
                            why="the record pipeline is behind")

    def _took(self) -> None:
        """The consumer took an event: resume reading once it has caught up halfway."""
        if self._paused_at is not None and self.queue.qsize() <= self.config.queue_size // 2:
            paused_s = time.time() - self._paused_at
            self._paused_at = None
            self._resumed_at = time.monotonic()
            mgr = self._manager
            if mgr is not None and mgr.protocol is not None:
                with contextlib.suppress(Exception):
                    mgr.protocol.transport.resume_reading()
            log.info("ami_reading_resumed", paused_s=round(paused_s, 3))

    async def run(self) -> None:
        """Stay connected until ``close()``; ``AmiLoginError`` is fatal and propagates."""
        while not self._closing:
            try:
                await self.connect()
            except AmiLoginError:
                raise
            except AmiError as e:
                self.stats.last_error = str(e)
                delay = self.backoff.next()
                log.warning("ami_connect_failed", error=str(e), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            try:
                await self._check_privileges()
                if self.on_login is not None:
                    try:
                        await self.on_login(self)
                    except AmiError as e:
                        log.warning("ami_on_login_failed", error=str(e))
                await self._watchdog()
            finally:
                self._drop_connection("reconnecting")
            if not self._closing:
                self.stats.reconnects += 1
                await asyncio.sleep(self.backoff.next())

    async def _watchdog(self) -> None:
        """Any byte received proves the link alive. After ``ping_interval`` of silence, Ping;
        the link is dead (a half-open connection, a hung Asterisk) only if nothing at all
        arrived within ``ping_timeout`` of it. While reading is paused nothing can arrive, so
        silence proves nothing then."""
        cfg = self.config
        while not self._lost.is_set() and not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), cfg.ping_interval)
                return
            if self._paused_at is not None:
                continue
            if (self._behind_since is not None and self.queue.empty()
                    and time.monotonic() - self._resumed_at >= cfg.ping_interval):
                self._behind_since = None  # caught up and still connected: nothing was lost
            if time.monotonic() - self._last_rx < cfg.ping_interval:
                continue
            sent = time.monotonic()
            try:
                await self.action({"Action": "Ping"}, timeout=cfg.ping_timeout)
            except AmiTimeout:
                if self._last_rx >= sent or self._paused_at is not None:
                    continue  # bytes came (the Pong is queued behind them): alive
                log.warning("ami_ping_timeout", timeout_s=cfg.ping_timeout)
                self._drop_connection(f"nothing received for {time.monotonic() - self._last_rx:.1f}s"
                                      f" (Ping unanswered after {cfg.ping_timeout:g}s)")
                return
            except AmiDisconnected:
                return

    def _drop_connection(self, cause: str = "reconnecting") -> None:
        mgr, self._manager = self._manager, None
        if self.stats.connected and self._drop_cause is None:
            self._drop_cause = cause
        if mgr is not None and mgr.protocol is not None:
            with contextlib.suppress(Exception):
                mgr.protocol.responses.clear()
                mgr.protocol.transport.abort()
        if self.stats.connected:  # abort() reports connection_lost on the next loop turn
            self._connection_lost(None)
        self.stats.connected = False

    async def close(self) -> None:
        self._closing = True
        mgr = self._manager
        if mgr is not None and self.connected:
            with contextlib.suppress(AmiError):
                await self.action({"Action": "Logoff"}, timeout=1.0)
        self._drop_connection("agent stopping")
        self._lost.set()

    # -- actions ----------------------------------------------------------------------------

    async def action(self, action: Mapping[str, str], *, as_list: bool | None = False,
                     timeout: float | None = None) -> Any:
        """``as_list=None``: a list if Asterisk answers with one (``EventList: start``), else
        the single response (an Error answer to a list action, say)."""
        mgr = self._manager
        if mgr is None or not self.connected:
            raise AmiDisconnected(f"AMI is not connected; {action.get('Action')} not sent")
        fut = mgr.protocol.send(dict(action), as_list=as_list)
        try:
            return await asyncio.wait_for(fut, timeout or self.config.action_timeout)
        except asyncio.TimeoutError as e:
            raise AmiTimeout(
                f"AMI action {action.get('Action')} got no response within "
                f"{timeout or self.config.action_timeout:.1f}s"
            ) from e

    async def _check_privileges(self) -> None:
        """Warn when the AMI user can do more than aftercall needs (least privilege)."""
        try:
            resp = await self.action({"Action": "ListCommands"})
        except AmiError as e:
            log.warning("ami_privileges_unknown", error=str(e))
            return
        excess = excess_write_actions(resp)
        self.stats.excess_write = tuple(excess)
        if excess:
            log.warning("ami_user_overprivileged", actions=list(excess),
                        message=describe(self.config.username, excess))

    async def core_show_channels(self) -> list[Message]:
        resp = await self.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
        return [m for m in resp if m.get("Event") == "CoreShowChannel"]

    # -- consuming --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Message]:
        while True:
            event = await self.queue.get()
            self._took()
            yield event

    async def consume(self, handler: Callable[[Message], Any]) -> None:
        """Feed every event to ``handler``; an exception there is logged, never fatal."""
        while True:
            event = await self.queue.get()
            self._took()
            try:
                res = handler(event)
                if asyncio.iscoroutine(res):
                    await res
            except Exception as e:  # noqa: BLE001 - one bad event must not stop tracking
                self.stats.handler_errors += 1
                log.error("ami_event_handler_failed", ami_event=event.get("Event"),
                          error=f"{type(e).__name__}: {e}")
