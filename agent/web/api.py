"""The JSON API behind the dashboard: the SMS log, the report, one call; plus /healthz and /metrics.

Every query runs in the report reader's worker thread (agent.store.sqlite.reports), never on
the event loop. ``/api/messages`` is one page (``limit`` <= 1000 from ``offset``) with the
total counted up to ``COUNT_CAP``; ``/api/report`` aggregates in SQL whatever the range."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from agent.errors import AftercallError
from agent.models import MessageState
from agent.reports import (
    ReportReader,
    build_report,
    count_messages,
    message_rows,
    parse_states,
    parse_when,
)
from agent.store.base import MessageFilter
from agent.web.deps import DEPS

log = structlog.get_logger(__name__)

READER: web.AppKey[ReportReader] = web.AppKey("reader")
AUTHED: web.RequestKey[bool] = web.RequestKey("authed")  # set when a token was shown
# set when the request may come from beyond this machine (agent.web.app.exposed)
EXPOSED: web.RequestKey[bool] = web.RequestKey("exposed")
MAX_LIMIT = 1000
MAX_OFFSET = 100_000  # deeper pages: narrow the range or export
COUNT_CAP = 10_000  # the log's total is counted up to here ("10,000+"): an index range, not a year


class BadParam(web.HTTPBadRequest):
    def __init__(self, name: str, why: str) -> None:
        super().__init__(text=f'{{"error": "query parameter {name!r}: {why}"}}',
                         content_type="application/json")


def _time(q: Mapping[str, str], name: str, *, end: bool = False,
          timezone: str = "UTC") -> datetime | None:
    """ISO date or datetime, in the operator's zone unless it says otherwise; a bare date as
    ``until`` means the end of that day."""
    v = q.get(name)
    if not v:
        return None
    try:
        return parse_when(v, end=end, timezone=timezone)
    except ValueError as exc:
        raise BadParam(name, str(exc)) from None


def _states(q: Mapping[str, str]) -> list[MessageState] | None:
    v = q.get("status")
    if not v:
        return None
    try:
        return parse_states(v)
    except ValueError as exc:
        raise BadParam("status", str(exc)) from None


def _limit(q: Mapping[str, str]) -> int:
    v = q.get("limit", "200")
    # isdigit() alone lets superscripts and 5000-digit strings reach int(), which refuses them
    if not (v.isascii() and v.isdigit() and len(v) <= 9) or not 1 <= int(v) <= MAX_LIMIT:
        raise BadParam("limit", f"expected a whole number 1..{MAX_LIMIT}")
    return int(v)


def _offset(q: Mapping[str, str]) -> int:
    v = q.get("offset", "0")
    if not (v.isascii() and v.isdigit() and len(v) <= 9) or int(v) > MAX_OFFSET:
        raise BadParam("offset", f"expected a whole number 0..{MAX_OFFSET}")
    return int(v)


def _unmasked(request: web.Request) -> bool:
    if "unmasked" not in request.query:
        return False
    deps = request.app[DEPS]
    # Full numbers need a token; with no token configured only a loopback-bound agent shows them.
    return bool(request.get(AUTHED)) or (deps.dashboard_token is None
                                         and not request.get(EXPOSED, True))


async def messages(request: web.Request) -> web.Response:
    q = request.query
    tz = request.app[DEPS].timezone
    number = (q.get("number") or "").strip() or None
    f = MessageFilter(
        states=_states(q), rule=q.get("rule") or None, number=number,
        gateway=q.get("gateway") or None, call_id=q.get("call") or None,
        pbx=q.get("pbx") or None, since=_time(q, "since", timezone=tz), until=_time(q, "until", end=True, timezone=tz),
        limit=_limit(q), offset=_offset(q),
    )
    # One page, newest first, paged on the server: the browser never holds more than a page.
    reader = request.app[READER]
    rows = await message_rows(reader, f, unmasked=_unmasked(request))
    total, more = await count_messages(reader, f, COUNT_CAP)
    body = {"messages": rows, "count": len(rows), "offset": f.offset, "limit": f.limit,
            "total": total, "total_capped": more,
            "has_more": f.offset + len(rows) < total or more}
    # A 1000-row page takes tens of milliseconds to encode: not on the loop that reads AMI.
    return web.Response(body=await reader.offload(_encode, body),
                        content_type="application/json")


def _encode(body: Any) -> bytes:
    return json.dumps(body).encode()


async def report(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    q = request.query
    tz = deps.timezone
    rep = await build_report(
        request.app[READER], since=_time(q, "since", timezone=tz),
        until=_time(q, "until", end=True, timezone=tz),
        rule=q.get("rule") or None, gateway=q.get("gateway") or None, pbx=q.get("pbx") or None,
        price_per_segment=deps.price_per_segment, currency=deps.currency, timezone=tz,
    )
    body = await request.app[READER].offload(lambda: _encode(rep.to_dict()))
    return web.Response(body=body, content_type="application/json")


async def pbxes(request: web.Request) -> web.Response:
    """The PBXs the database has calls or messages of: the dashboard's PBX picker."""
    return web.json_response({"pbxes": await request.app[READER].pbx_names()})


async def _check(fn: Any) -> dict[str, Any]:
    try:
        out = fn()
        if inspect.isawaitable(out):
            out = await out
        return dict(out)
    except Exception as exc:  # noqa: BLE001 - a broken probe means that part is down, not /healthz
        return {"ok": False, "error": type(exc).__name__}


async def healthz(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    checks: dict[str, dict[str, Any]] = {name: await _check(fn) for name, fn in deps.health.items()}
    if "store" in checks:
        deps.metrics.store_health(bool(checks["store"].get("ok")))
    # A soft check (the event loop's lag) degrades the status but does not take the agent down:
    # a slow moment is worth an alert, not a restart by an orchestrator.
    down = sorted(name for name, c in checks.items() if not c.get("ok") and not c.get("soft"))
    degraded = sorted(name for name, c in checks.items() if not c.get("ok") and c.get("soft"))
    status = "down" if down else "degraded" if degraded else "ok"
    body = {"status": status, "down": down, "degraded": degraded, "checks": checks}
    return web.json_response(body, status=503 if down else 200,
                             headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[DEPS].metrics.render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


@web.middleware
async def store_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except AftercallError as exc:
        log.error("api_failed", path=request.path, error=str(exc))
        return web.json_response({"error": "the store cannot answer right now"}, status=503)
