"""HTTP routes that gateways and handsets hit: receipt/reply webhooks and tracked-link redirects."""

from __future__ import annotations

import contextlib
from datetime import datetime

import structlog
from aiohttp import web

from agent.errors import AftercallError
from agent.gateways.webhooks import (
    Kind,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookRequest,
    ack_for,
    handle,
)
from agent.sms.links import is_code
from agent.store.seams import Engagement
from agent.web.deps import DEPS

log = structlog.get_logger(__name__)

_NOT_FOUND = "not found\n"
REPLAY_TTL = 86_400.0  # seconds a webhook nonce is remembered (the memory cache's too)


def _store(request: web.Request) -> Engagement:
    """The agent's store as these routes use it: webhook nonces, tracked links and clicks."""
    return request.app[DEPS].store


def _public_url(request: web.Request, callback_base: str | None) -> str:
    """The URL as the gateway called it. Signatures cover the public URL (``callback_base``),
    not the address a reverse proxy forwarded to, so rebuild it from the configured base."""
    raw = request.raw_path
    if not callback_base:
        return f"{request.scheme}://{request.host}{raw}"
    i = raw.find("/webhooks/")
    return callback_base.rstrip("/") + (raw[i:] if i >= 0 else raw)


async def webhook(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    name, kind_s = request.match_info["gateway"], request.match_info["kind"]
    config = deps.webhooks.get(name)
    if config is None or kind_s not in ("receipt", "inbound"):
        return web.Response(status=404, text=_NOT_FOUND)
    kind = Kind(kind_s)
    body = await request.read()  # bounded by the app's client_max_size: 413 beyond it
    try:
        form = await request.post() \
            if request.content_type == "application/x-www-form-urlencoded" else None
    except (UnicodeDecodeError, ValueError) as exc:
        # Before anything else (and before authentication): a body we can't decode is the
        # sender's mistake, answered 400 without a traceback.
        log.warning("webhook_undecodable", gateway=name, kind=kind.value,
                    why=type(exc).__name__)
        return web.Response(status=400, text="body is not decodable form data\n")
    req = WebhookRequest(request.method, _public_url(request, config.callback_base),
                         request.headers, request.query, form, body, remote=request.remote)
    now: datetime = deps.clock()
    try:
        out = handle(config, kind, req, now=now, replay=deps.replay)
        # The memory cache is the fast path; the store remembers across restarts.
        try:
            fresh = await _store(request).claim_nonce(out.nonce, now=now, ttl=REPLAY_TTL)
        except AftercallError as exc:
            deps.replay.discard(out.nonce)
            log.error("webhook_unprocessed", gateway=name, kind=kind.value, error=str(exc))
            return web.Response(status=503, text="try again later\n")
        if not fresh:
            raise WebhookReplayError(f"gateway {name} {kind.value} webhook: replayed request")
    except WebhookReplayError:
        log.info("webhook_replayed", gateway=name, kind=kind.value)
        ack = ack_for(config, kind)
        return web.Response(status=ack.status, text=ack.body, content_type=ack.content_type)
    except WebhookAuthError as exc:
        log.warning("webhook_refused", gateway=name, kind=kind.value, why=str(exc))
        return web.Response(status=403, text="forbidden\n")
    except WebhookPayloadError as exc:
        log.warning("webhook_malformed", gateway=name, kind=kind.value, why=str(exc))
        return web.Response(status=400, text=f"{exc}\n")
    try:
        if out.receipt is not None:
            await deps.on_receipt(out.receipt)
            deps.metrics.receipt(out.receipt.state)
        if out.inbound is not None:
            await deps.on_inbound(out.inbound)
    except AftercallError as exc:
        # Not recorded: forget the nonce so the gateway's retry is processed, and ask for one.
        deps.replay.discard(out.nonce)
        with contextlib.suppress(AftercallError):
            await _store(request).forget_nonce(out.nonce)
        log.error("webhook_unprocessed", gateway=name, kind=kind.value, error=str(exc))
        return web.Response(status=503, text="try again later\n")
    ack = out.ack
    return web.Response(status=ack.status, text=ack.body, content_type=ack.content_type)


async def redirect(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    code = request.match_info["code"]
    # Malformed and unknown codes get the same answer: probing learns nothing.
    link = await _store(request).resolve_link(code) if is_code(code) else None
    if link is None:
        return web.Response(status=404, text=_NOT_FOUND,
                            headers={"Cache-Control": "no-store"})
    ua = request.headers.get("User-Agent")
    try:
        await _store(request).add_click(code, at=deps.clock(), user_agent=ua[:512] if ua else None)
    except AftercallError as exc:  # the handset still gets where it was going
        log.error("click_unrecorded", code=code, error=str(exc))
    else:
        log.info("link_clicked", code=code, message_id=link.message_id)
    return web.Response(status=302, headers={
        "Location": link.url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
