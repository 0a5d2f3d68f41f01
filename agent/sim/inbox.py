"""The simulator's handsets, for people: an inbox page per number and a form (and CLI) to reply
as the customer, so a demo shows both ends of the conversation.

``GET /sim/inbox`` lists every message the simulator took, grouped by the handset it went to,
with the replies sent from there; ``POST /sim/inbox/reply`` (form fields ``from``, ``text``,
optional ``to``) sends a reply as that handset (an MO to every bound gateway). The CLI side is
``aftercall smsc-sim inbox --url http://127.0.0.1:PORT`` and
``aftercall smsc-sim reply C --from +919811000104 --url ...``.
"""

from __future__ import annotations

import html
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from agent.sim.core import SimCore

MAX_TEXT = 480


def _page(core: SimCore, sent: list[dict[str, str]], note: str = "") -> str:
    by_number: dict[str, list[tuple[str, str, str, str]]] = {}
    for m in core.messages:
        by_number.setdefault(m.dest, []).append(
            (m.received_at.isoformat(timespec="seconds"), "in", m.source, m.text))
    for r in sent:
        by_number.setdefault(r["from"], []).append((r["at"], "out", r["to"], r["text"]))
    e = html.escape
    parts = ["<!doctype html><meta charset=utf-8><title>Handset inbox (simulator)</title>",
             "<style>body{font:14px system-ui;margin:24px;max-width:900px}"
             "section{border:1px solid #ddd;border-radius:8px;padding:8px 12px;margin:10px 0}"
             ".in{background:#f1f5f9}.out{background:#dcfce7;text-align:right}"
             "p{border-radius:8px;padding:6px 10px;margin:4px 0}small{color:#667}</style>",
             "<h1>Handset inbox <small>(the SMS simulator)</small></h1>",
             f"<p>{e(note)}</p>" if note else "",
             "<form method=post action=/sim/inbox/reply>Reply as <input name=from "
             "placeholder=+9198... required> <input name=text placeholder='C or STOP' required>"
             " <button>Send reply</button></form>"]
    if not by_number:
        parts.append("<p>No messages yet.</p>")
    for number, items in sorted(by_number.items()):
        parts.append(f"<section data-number='{e(number)}'><h2>{e(number)}</h2>")
        for at, way, other, text in sorted(items):
            who = f"from {other}" if way == "in" else f"reply to {other}"
            parts.append(f"<p class={way}><small>{e(at)} {e(who)}</small><br>{e(text)}</p>")
        parts.append("</section>")
    return "\n".join(parts)


def add_inbox_routes(app: web.Application, core: SimCore) -> None:
    sent: list[dict[str, str]] = []

    async def inbox(request: web.Request) -> web.Response:
        if "json" in request.query:
            return web.json_response({"messages": [m.to_dict() for m in core.messages],
                                      "replies": sent})
        return web.Response(text=_page(core, sent), content_type="text/html")

    async def reply(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        sender, text = str(form.get("from", "")).strip(), str(form.get("text", "")).strip()
        if not sender or not text or len(text) > MAX_TEXT:
            return web.Response(status=400, text=f"from and text (up to {MAX_TEXT} chars) "
                                "are required\n")
        # The reply goes to the sender id that last texted this handset (as a phone would).
        to = str(form.get("to", "")).strip() or next(
            (m.source for m in reversed(core.messages) if m.dest == sender), "")
        listeners = await core.inject_mo(sender, to, text)
        sent.append({"at": datetime.now(UTC).isoformat(timespec="seconds"), "from": sender,
                     "to": to, "text": text, "listeners": str(listeners)})
        if request.headers.get("Accept", "").startswith("application/json"):
            return web.json_response({"listeners": listeners, "to": to})
        raise web.HTTPSeeOther("/sim/inbox")

    app.router.add_get("/sim/inbox", inbox)
    app.router.add_post("/sim/inbox/reply", reply)


# -- the CLI side ---------------------------------------------------------------------------------


def _call(url: str, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - an http:// URL we were given
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConnectionError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def inbox_cli(url: str, number: str | None) -> int:
    """Print the handsets' messages (one line each), oldest first."""
    try:
        data = _call(url.rstrip("/") + "/sim/inbox?json")
    except ConnectionError as exc:
        sys.stderr.write(f"smsc-sim: cannot read the inbox: {exc}\n")
        return 3
    for m in data["messages"]:
        if number in (None, m["dest"]):
            print(f"{m['received_at']}\t{m['dest']}\t<- {m['source']}\t{m['text']}")
    for r in data["replies"]:
        if number in (None, r["from"]):
            print(f"{r['at']}\t{r['from']}\t-> {r['to']}\t{r['text']}")
    return 0


def reply_cli(url: str, sender: str, text: str, to: str | None) -> int:
    body = urllib.parse.urlencode({"from": sender, "text": text, "to": to or ""}).encode()
    try:
        out = _call(url.rstrip("/") + "/sim/inbox/reply", body)
    except ConnectionError as exc:
        sys.stderr.write(f"smsc-sim: cannot send the reply: {exc}\n")
        return 3
    print(f"reply from {sender} to {out['to'] or '(no sender id)'}: {text}")
    return 0
