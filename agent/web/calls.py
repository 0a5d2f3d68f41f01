"""The calls view's API: every call with what each rule said and what became of each message.

``GET /api/calls`` lists calls (filters: since, until, number, queue, agent, disposition, pbx);
``GET /api/calls/{id}`` is ``aftercall explain`` from stored data (``id`` is a call id, or
``PBX:CALLID``, or the id with ``?pbx=``: an id that several PBXs have is refused with 409 and
their names): the record, each rule
(matched or the condition that failed, as decided at the time), and each message with its
history, receipts and replies. Numbers, in fields and inside texts, are masked unless the token
holder asks for them (``?unmasked``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from agent.errors import CallLookupError
from agent.models import CallRecord, MessageState
from agent.sms.numbers import classify, mask, mask_text
from agent.store.base import CallFilter, MessageFilter, MessageRow
from agent.store.seams import CallsView
from agent.store.lookup import find_call
from agent.web.api import BadParam, _time, _unmasked
from agent.web.deps import DEPS

MAX_CALLS = 500


def _store(request: web.Request) -> CallsView:
    """The agent's store as the calls view reads it."""
    return request.app[DEPS].store


def public_reason(state: str, reason: str | None) -> str | None:
    """The reason a person should see: none for a delivered message (its receipt is the story),
    and not the internal word ``receipt`` (the receipt's error code and detail say more)."""
    if state == MessageState.DELIVERED or reason == "receipt":
        return None
    return reason


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def _num(value: str | None, clear: bool) -> str | None:
    if not value or clear:
        return value
    return mask(value) if value.startswith("+") else mask_text(value)


def _txt(value: str | None, clear: bool) -> str | None:
    return value if value is None or clear else mask_text(value)


def _record(rec: CallRecord, pbx: str | None, clear: bool) -> dict[str, Any]:
    out = rec.to_dict()
    out["caller"] = _num(rec.caller, clear)
    out["agent_number"] = _num(rec.agent_number, clear)
    out["vars"] = {k: _txt(v, clear) for k, v in rec.vars.items()}
    out["pbx"] = pbx
    for k in ("started_at", "answered_at", "ended_at"):
        out[k] = _iso(getattr(rec, k))
    return out


def _int(q: Mapping[str, str], name: str, default: int, top: int) -> int:
    v = q.get(name, str(default))
    if not (v.isascii() and v.isdigit() and len(v) <= 9) or int(v) > top:
        raise BadParam(name, f"expected a whole number 0..{top}")
    return int(v)


def _number(value: str | None, region: str | None) -> str | None:
    """What the operator typed: a full number (any format) -> E.164; else the digits, which
    match the end of a number (at least 4, so a search never lists every call)."""
    v = (value or "").strip()
    if not v:
        return None
    info = classify(v, region or "IN")
    if info.e164:
        return info.e164
    digits = "".join(ch for ch in v if ch.isdigit())
    if len(digits) < 4:
        raise BadParam("number", "expected a phone number or at least its last 4 digits")
    return digits


async def calls(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    q = request.query
    tz = deps.timezone
    f = CallFilter(
        since=_time(q, "since", timezone=tz), until=_time(q, "until", end=True, timezone=tz),
        number=_number(q.get("number"), deps.region), queue=q.get("queue") or None,
        agent=q.get("agent") or None, disposition=q.get("disposition") or None,
        pbx=q.get("pbx") or None, limit=max(1, _int(q, "limit", 100, MAX_CALLS)),
        offset=_int(q, "offset", 0, 10**9),
    )
    clear = _unmasked(request)
    found = await _store(request).list_calls(f)
    rows = []
    for c in found:
        r = c.record
        rows.append({
            "call_id": r.call_id, "ended_at": _iso(r.ended_at), "started_at": _iso(r.started_at),
            "caller": _num(r.caller, clear), "direction": r.direction.value, "did": r.did,
            "queue": r.queue, "agent": r.agent, "agent_name": r.agent_name,
            "disposition": r.disposition.value, "talk_seconds": r.talk_seconds,
            "tags": list(r.tags), "pbx": c.pbx,
            "messages": [{"rule": rule, "status": str(state),
                          "reason": public_reason(state, reason)}
                         for rule, state, reason in c.messages],
        })
    return web.json_response({"calls": rows, "count": len(rows), "limit": f.limit,
                              "offset": f.offset})


def _message(m: MessageRow, clear: bool) -> dict[str, Any]:
    return {
        "id": m.id, "rule": m.rule, "trigger": m.trigger.value,
        "recipient_kind": m.recipient_kind.value, "number": _num(m.number, clear),
        "status": m.state.value, "reason": public_reason(m.state, m.reason),
        "detail": None if m.state is MessageState.DELIVERED else _txt(m.detail, clear),
        "error_code": None if m.state is MessageState.DELIVERED else m.error_code,
        "text": _txt(m.text, clear), "template": m.template, "gateway": m.gateway,
        "segments": m.segments, "encoding": m.encoding, "attempts": m.attempts,
        "created_at": _iso(m.created_at), "submitted_at": _iso(m.submitted_at),
        "final_at": _iso(m.final_at), "next_attempt_at": _iso(m.next_attempt_at),
        "hangup_to_submit_ms": m.hangup_to_submit_ms,
    }


async def call(request: web.Request) -> web.Response:
    store = _store(request)
    clear = _unmasked(request)
    try:
        pbx, call_id = await find_call(store, request.match_info["call_id"],
                                       request.query.get("pbx") or None)
    except CallLookupError as e:
        if e.pbxes:
            raise web.HTTPConflict(text=json.dumps({"error": str(e), "pbxes": list(e.pbxes)}),
                                   content_type="application/json") from None
        raise web.HTTPNotFound(text='{"error": "no such call"}',
                               content_type="application/json") from None
    found = await store.list_calls(CallFilter(call_id=call_id, pbx=pbx, limit=1))
    rows = await store.list_messages(MessageFilter(call_id=call_id, pbx=pbx, limit=100,
                                                   newest_first=False))
    replies: dict[str, list[dict[str, Any]]] = {}
    for p in await store.replies_to([m.id for m in rows]):
        replies.setdefault(p.message_id or "", []).append({
            "text": _txt(p.text, clear), "keyword": p.keyword, "action": p.action,
            "received_at": _iso(p.received_at)})
    messages = []
    for m in rows:
        out = _message(m, clear)
        out["history"] = [{"at": _iso(e.at), "state": e.state.value, "reason": e.reason,
                           "detail": _txt(e.detail, clear)}
                          for e in await store.message_events(m.id)]
        out["receipts"] = [{"state": r.state, "error_code": r.error_code,
                            "done_at": _iso(r.done_at), "received_at": _iso(r.received_at)}
                           for r in await store.receipts(message_id=m.id)]
        out["replies"] = replies.get(m.id, [])
        messages.append(out)
    outcomes = await store.rule_outcomes(call_id, pbx=pbx)
    by_rule: dict[tuple[str, str], list[str]] = {}
    for m in rows:
        by_rule.setdefault((m.rule, m.trigger.value), []).append(m.id)
    rules = [{"rule": o.rule, "trigger": o.trigger.value, "matched": o.matched,
              "reason": o.reason, "skipped": list(o.skipped),
              "messages": by_rule.get((o.rule, o.trigger.value), [])} for o in outcomes]
    record = _record(found[0].record, found[0].pbx, clear) if found else None
    return web.json_response({"call": record, "rules": rules, "messages": messages})
