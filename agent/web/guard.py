"""What stands between the network and the handlers: Host check, exposure, per-route rate
limits, expiring session cookies and the header read deadline.

Threat model (README "Security"): the dashboard and ``/api`` show every number and text, so
they are served without the token only to a browser on this machine talking to a
loopback-bound agent directly. A DNS-rebinding page in that browser names the agent by its own
domain: the ``Host`` check refuses it. A reverse proxy on loopback (the usual way to publish
``/l/`` and ``/webhooks``) makes the internet look local: so does ``public_url`` being set or
a forwarding header arriving, and then the token is required. ``/l/``, ``/webhooks`` and
``/healthz`` are public by design (webhooks authenticate themselves).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from yarl import URL

log = structlog.get_logger(__name__)

PUBLIC_PREFIXES = ("/l/", "/rec/", "/webhooks/")  # /rec/: the signature is the key
PUBLIC_PATHS = frozenset({"/healthz"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                      "X-Real-IP")
SESSION_TTL = 12 * 3600.0  # seconds a dashboard session cookie is good for
HEADER_TIMEOUT = 10.0  # seconds a connection has to send a complete request head


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def forwarded(request: web.Request) -> bool:
    """A proxy passed this request on (it may come from anywhere)."""
    return any(h in request.headers for h in FORWARDING_HEADERS)


def host_allowed(host_header: str | None, public_url: str | None,
                 extra: frozenset[str] = frozenset()) -> bool:
    """Loopback names, IP literals (a rebinding attack needs a domain name of its own), the
    host of ``public_url`` and ``extra`` names. The port is ignored."""
    if not host_header:
        return False
    try:
        host = (URL(f"http://{host_header}").host or "").lower().rstrip(".")
    except ValueError:
        return False
    if not host:
        return False
    if host in LOOPBACK_NAMES or host.endswith(".localhost") or host in extra:
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    return bool(public_url) and host == (URL(public_url).host or "").lower()


# -- session cookies -----------------------------------------------------------------------------


def session_value(token: str, now: float, ttl: float = SESSION_TTL) -> str:
    """``<expiry>.<HMAC(token, expiry)>``: it expires, and a new token voids every old one."""
    expires = int(now + ttl)
    mac = hmac.new(token.encode(), f"aftercall-session|{expires}".encode(), hashlib.sha256)
    return f"{expires}.{mac.hexdigest()}"


def session_valid(value: str, token: str, now: float) -> bool:
    expires_s, _, mac = value.partition(".")
    if not (expires_s.isascii() and expires_s.isdigit() and len(expires_s) <= 12) or not mac:
        return False
    expected = hmac.new(token.encode(), f"aftercall-session|{expires_s}".encode(),
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac.encode(), expected.encode()) and now < int(expires_s)


# -- rate limits ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteLimit:
    rate: float  # requests per second, sustained
    burst: int


#: Per client address and route group. /api/report is the heavy one (it aggregates).
ROUTE_LIMITS: Mapping[str, RouteLimit] = {
    "webhooks": RouteLimit(50.0, 200),
    "links": RouteLimit(10.0, 40),
    "report": RouteLimit(0.5, 4),
    "api": RouteLimit(10.0, 40),
    "metrics": RouteLimit(2.0, 10),
    "healthz": RouteLimit(5.0, 20),
    "page": RouteLimit(10.0, 60),
}


def route_group(path: str) -> str:
    if path.startswith("/webhooks/"):
        return "webhooks"
    if path.startswith("/l/"):
        return "links"
    if path == "/api/report":
        return "report"
    if path.startswith("/api/"):
        return "api"
    if path in ("/metrics", "/healthz"):
        return path[1:]
    return "page"


class RateLimiter:
    """Token buckets per (route group, client); at most ``max_keys`` buckets (oldest dropped)."""

    def __init__(self, limits: Mapping[str, RouteLimit] = ROUTE_LIMITS, *,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._max = max_keys
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def check(self, group: str, client: str) -> float:
        """0 if the request may go ahead (and it is counted), else seconds to wait."""
        limit = self.limits.get(group)
        if limit is None:
            return 0.0
        now = self._clock()
        key = (group, client)
        tokens, at = self._buckets.pop(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - at) * limit.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / limit.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


# -- the header read deadline ---------------------------------------------------------------------


class _HeaderDeadline:
    """Wraps aiohttp's protocol factory: a connection that has not completed a request head
    within ``timeout`` (and is not being answered) is closed. aiohttp has no such timeout:
    200 connections trickling headers held the server's sockets indefinitely."""

    def __init__(self, server: Any, timeout: float) -> None:
        self._server = server
        self._timeout = timeout
        self.closed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def __call__(self) -> Any:
        proto = self._server()
        asyncio.get_running_loop().call_later(self._timeout, self._check, proto, 0)
        return proto

    def _check(self, proto: Any, seen: int) -> None:
        transport = getattr(proto, "transport", None)
        if transport is None or transport.is_closing():
            return
        count = getattr(proto, "_request_count", 0)
        busy = getattr(proto, "_current_request", None) is not None
        if count == seen and not busy:
            self.closed += 1
            log.debug("http_header_timeout", timeout=self._timeout)
            transport.close()
            return
        asyncio.get_running_loop().call_later(self._timeout, self._check, proto, count)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections must send a request head within ``header_timeout``."""

    def __init__(self, app: web.Application, *, header_timeout: float = HEADER_TIMEOUT,
                 **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", 15.0)
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout

    async def _make_server(self) -> Any:
        return _HeaderDeadline(await super()._make_server(), self.header_timeout)
