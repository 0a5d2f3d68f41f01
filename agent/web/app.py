"""The agent's HTTP server: webhooks, tracked links, JSON API, dashboard, /metrics and /healthz.

Who may call what: webhooks authenticate themselves (signatures or URL tokens, see
``agent.gateways.webhooks``); ``/l/``, ``/rec/`` (its signature is the key, see
agent.web.recordings) and ``/healthz`` are public; the dashboard, ``/api/*``
and (unless ``metrics_public``) ``/metrics`` need the dashboard token whenever the server may
be reached from beyond this machine: bound beyond loopback, ``public_url`` set, or a
forwarding header on the request (agent.web.guard, which also checks ``Host`` and rate-limits
each route). The token is shown once (``Authorization: Bearer`` or ``?token=``); a cookie
carrying an expiring HMAC of it (never the token) keeps the browser signed in.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from agent.errors import ConfigError
from agent.store import report_source
from agent.web import api, calls, guard, manage, recordings
from agent.web.deps import DEPS, WebDeps
from agent.web.hooks import redirect, webhook

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = manage.SESSION_COOKIE  # the CSRF token (web/manage.py) is bound to it


def _protected(path: str, deps: WebDeps) -> bool:
    if path == "/" or path.startswith(("/api/", "/static/")):
        return True
    return path == "/metrics" and not deps.metrics_public


def _presented(request: web.Request, token: str) -> str | None:
    """How the request proved it knows the token: "header", "query", "cookie" or None."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
        return "header"
    q = request.query.get("token")
    if q is not None and hmac.compare_digest(q.encode(), token.encode()):
        return "query"
    c = request.cookies.get(COOKIE)
    if c is not None and guard.session_valid(c, token, time.time()):
        return "cookie"
    return None


def exposed(request: web.Request, deps: WebDeps) -> bool:
    """Whether this request may come from beyond this machine (guard's threat model)."""
    return not deps.bound_to_loopback or bool(deps.public_url) or guard.forwarded(request)


@web.middleware
async def _limits(request: web.Request, handler: Any) -> web.StreamResponse:
    deps = request.app[DEPS]
    wait = deps.limiter.check(guard.route_group(request.path), request.remote or "-")
    if wait > 0:
        return web.Response(status=429, text="too many requests\n",
                            headers={"Retry-After": str(max(1, round(wait)))})
    return await handler(request)


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    deps = request.app[DEPS]
    token = deps.dashboard_token
    how = _presented(request, token) if token else None
    if how is not None:
        request[api.AUTHED] = True
        request[manage.AUTH_VIA] = how
    if how is None and not guard.is_public(request.path) and not guard.host_allowed(
            request.host, deps.public_url, deps.allowed_hosts):
        # A page on another domain resolving to us (DNS rebinding) must not read the API. It
        # can't show the token (nor send a cookie set for our name), so a request that does
        # may use any name.
        log.warning("http_host_refused", host=request.host[:100], path=request.path[:100])
        return web.Response(status=421, text="unknown host\n")
    outside = exposed(request, deps)
    request[api.EXPOSED] = outside
    if _protected(request.path, deps) and outside and how is None:
        if not token:
            return web.Response(status=403, text="the dashboard, /api and /metrics are not served "
                                "beyond this machine without a dashboard token "
                                "(AFTERCALL_DASHBOARD_TOKEN)\n")
        if request.path.startswith("/api/") or request.path == "/metrics":
            return web.json_response({"error": "token required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return web.Response(status=401, text="token required: open /?token=<dashboard token>\n")
    if how == "query" and token and request.method == "GET" and request.path == "/":
        # Trade the token in the URL for a cookie at once, so it leaves the address bar/history.
        resp = web.Response(status=302, headers={"Location": "/", "Cache-Control": "no-store"})
        resp.set_cookie(COOKIE, guard.session_value(token, time.time(), deps.session_ttl),
                        httponly=True, samesite="Strict", secure=request.secure, path="/",
                        max_age=int(deps.session_ttl))
        return resp
    return await handler(request)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path == "/" or request.path.startswith("/static/"):
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        )
        resp.headers.setdefault("X-Frame-Options", "DENY")
    return resp


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def make_app(deps: WebDeps) -> web.Application:
    """The aiohttp application. Refuses to expose the dashboard beyond loopback without a token."""
    if not deps.bound_to_loopback and not deps.dashboard_token:
        raise ConfigError(
            "the HTTP server listens beyond loopback: set a dashboard token "
            "(AFTERCALL_DASHBOARD_TOKEN) or bind to 127.0.0.1")
    app = web.Application(client_max_size=deps.max_body,
                          middlewares=[_limits, _headers, _auth, api.store_errors])
    app[DEPS] = deps
    app.router.add_route("GET", "/webhooks/{gateway}/{kind}", webhook)
    app.router.add_route("POST", "/webhooks/{gateway}/{kind}", webhook)
    app.router.add_get("/l/{code}", redirect)
    app.router.add_get("/rec/{call_id}/{expires}/{sig}/{file}", recordings.recording)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/api/messages", api.messages)
    app.router.add_get("/api/report", api.report)
    app.router.add_get("/api/pbxes", api.pbxes)
    app.router.add_get("/api/calls", calls.calls)
    app.router.add_get("/api/calls/{call_id}", calls.call)
    manage.add_routes(app)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)

    async def open_reader(app: web.Application) -> Any:
        app[api.READER] = await report_source(deps.store).open()  # type: ignore[arg-type]
        yield
        await app[api.READER].close()

    app.cleanup_ctx.append(open_reader)
    return app
