"""Managing the lists from the dashboard: opt-outs, DND (one number or a CSV), ambiguous messages.

Every change needs the dashboard token (a configured one: an agent without a token has nobody to
name in the history) and, when the token came as the browser's session cookie, the CSRF token
from ``GET /api/session`` in ``X-CSRF-Token``: a page on another site can make the browser send
the cookie, never read that value. The CSRF token is bound to the session cookie (agent.web.guard),
so it expires with the session and a new dashboard token voids both. Each change is recorded with who made it (``X-Operator``, the
name the operator typed, else "dashboard") and when: in the number's list history or as an event
of the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.dispatch.verdicts import give_verdict
from agent.models import MessageState
from agent.sms.numbers import classify, mask
from agent.store.base import MessageFilter
from agent.store.seams import ListAdmin, MessageLog, Outbox
from agent.web.api import AUTHED, _unmasked
from agent.web.deps import DEPS

AUTH_VIA: web.RequestKey[str] = web.RequestKey("auth_via")  # header | query | cookie
MAX_CSV = 5 * 1024 * 1024  # a DND export from a regulator is a few MB at most
_OPERATOR = re.compile(r"[^\w .@-]")
LISTS = ("optout", "dnd")


def _lists(request: web.Request) -> ListAdmin:
    """The agent's store as the list routes change and read it."""
    return request.app[DEPS].store


def _log(request: web.Request) -> MessageLog:
    """The agent's store as the ambiguous messages are read from it."""
    return request.app[DEPS].store


def _outbox(request: web.Request) -> Outbox:
    """The agent's store as an operator's verdict moves an ambiguous message (give_verdict)."""
    return request.app[DEPS].store


SESSION_COOKIE = "aftercall_session"  # set by agent.web.app's auth middleware


def csrf_token(dashboard_token: str, session: str) -> str:
    """The CSRF token for one session cookie value."""
    return hmac.new(dashboard_token.encode(), b"aftercall-dashboard-csrf:" + session.encode(),
                    hashlib.sha256).hexdigest()


def _refuse(status: int, why: str) -> web.HTTPException:
    cls = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    return cls(text=f'{{"error": "{why}"}}', content_type="application/json")


def _manage_refusal(request: web.Request) -> tuple[int, str] | None:
    deps = request.app[DEPS]
    if not deps.dashboard_token:
        return 403, "managing lists needs a dashboard token (set AFTERCALL_DASHBOARD_TOKEN)"
    if not request.get(AUTHED):
        return 401, "token required"
    return None


def _who(request: web.Request) -> str:
    """Who to name in the history. The CSRF check proves a token holder sent the request; the
    operator's name is what they typed in the dashboard."""
    guard = _manage_refusal(request)
    if guard is not None:
        raise _refuse(*guard)
    deps = request.app[DEPS]
    assert deps.dashboard_token is not None
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise _refuse(403, "cross-origin request refused")
    if request.get(AUTH_VIA) != "header":  # a cookie (or URL token) rides along by itself
        sent = request.headers.get("X-CSRF-Token", "")
        want = csrf_token(deps.dashboard_token, request.cookies.get(SESSION_COOKIE, ""))
        if not hmac.compare_digest(sent.encode(), want.encode()):
            raise _refuse(403, "missing or wrong X-CSRF-Token (reload the dashboard)")
    name = _OPERATOR.sub("", request.headers.get("X-Operator", ""))[:40].strip()
    return f"dashboard:{name}" if name else "dashboard"


async def session(request: web.Request) -> web.Response:
    """What the dashboard needs to know before it draws: time zone, and whether (and with which
    CSRF token) it may manage lists."""
    deps = request.app[DEPS]
    refusal = _manage_refusal(request)
    return web.json_response({
        "timezone": deps.timezone, "region": deps.region,
        "manage": refusal is None, "manage_refused": refusal[1] if refusal else None,
        "csrf": csrf_token(deps.dashboard_token, request.cookies.get(SESSION_COOKIE, ""))
        if refusal is None and deps.dashboard_token else None,
        "unmasked": _unmasked(request),
    }, headers={"Cache-Control": "no-store"})


def _e164(request: web.Request, raw: Any) -> str:
    info = classify(str(raw or ""), request.app[DEPS].region or "IN")
    if info.e164 is None:
        raise web.HTTPBadRequest(text=f'{{"error": "number: not a phone number ({info.kind})"}}',
                                 content_type="application/json")
    return info.e164


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "expected a JSON object"}',
                                 content_type="application/json")
    return data


async def lists(request: web.Request) -> web.Response:
    """Both lists, recent changes and the ambiguous messages. Only for a token holder: managing
    means seeing the numbers one manages."""
    guard = _manage_refusal(request)
    if guard is not None:
        raise _refuse(*guard)
    store = _lists(request)

    def entry(number: str, **kw: Any) -> dict[str, Any]:
        return {"number": number, "masked": mask(number), **kw}

    out: dict[str, Any] = {}
    for which in LISTS:
        out[which] = [entry(e.number, at=e.at.isoformat(), source=e.source)
                      for e in await store.list_numbers(which, limit=500)]
    out["history"] = [entry(e.number, list=e.list, action=e.action, at=e.at.isoformat(),
                            who=e.who) for e in await store.list_history(limit=50)]
    amb = await _log(request).list_messages(MessageFilter(states=[MessageState.AMBIGUOUS], limit=200,
                                                  newest_first=False))
    out["ambiguous"] = [{"id": m.id, "call_id": m.call_id, "rule": m.rule,
                         "number": m.number, "created_at": m.created_at.isoformat(),
                         "smsc_ids": list(m.smsc_ids), "detail": m.detail} for m in amb]
    return web.json_response(out, headers={"Cache-Control": "no-store"})


async def change_list(request: web.Request) -> web.Response:
    who = _who(request)
    which = request.match_info["which"]
    body = await _body(request)
    number = _e164(request, body.get("number"))
    store = _lists(request)
    action = body.get("action")
    if action == "add":
        if which == "optout":
            await store.opt_out(number, source=who)
        else:
            await store.add_dnd([number], source=who)
        changed = True
    elif action == "remove":
        changed = await (store.opt_in(number, source=who) if which == "optout"
                         else store.remove_dnd(number, source=who))
    else:
        raise web.HTTPBadRequest(text='{"error": "action: expected add or remove"}',
                                 content_type="application/json")
    return web.json_response({"list": which, "action": action, "number": mask(number),
                              "changed": changed, "who": who})


async def import_dnd(request: web.Request) -> web.Response:
    """A DND CSV as the request body (one number per row, first column); same rules as
    ``aftercall dnd import``. Problems name the row."""
    who = _who(request)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_CSV:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_CSV, actual_size=size)
        chunks.append(chunk)
    store = _lists(request)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.csv"
        await asyncio.to_thread(path.write_bytes, b"".join(chunks))
        res = await store.import_dnd_csv(path, region=request.app[DEPS].region, source=who)
    problems = [p.replace(str(path), "upload.csv") for p in res.problems]
    return web.json_response({"imported": res.imported, "problems": problems[:100],
                              "skipped": len(problems), "who": who})


async def verdict(request: web.Request) -> web.Response:
    who = _who(request)
    body = await _body(request)
    action = body.get("action")
    if action not in ("resend", "drop"):
        raise web.HTTPBadRequest(text='{"error": "action: expected resend or drop"}',
                                 content_type="application/json")
    deps = request.app[DEPS]
    row = await give_verdict(_outbox(request), request.match_info["id"], action, who=who,
                             now=deps.clock())
    if row is None:
        raise web.HTTPNotFound(text='{"error": "no ambiguous message with that id"}',
                               content_type="application/json")
    return web.json_response({"id": row.id, "status": row.state.value, "who": who})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/session", session)
    app.router.add_get("/api/lists", lists)
    app.router.add_post("/api/lists/dnd/import", import_dnd)
    app.router.add_post("/api/lists/{which:optout|dnd}", change_list)
    app.router.add_post("/api/ambiguous/{id}", verdict)


__all__ = ["AUTH_VIA", "add_routes", "csrf_token"]
