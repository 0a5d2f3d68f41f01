"""The simulator's HTTP face: Kannel, Jasmin, Twilio and generic send endpoints, their receipts
and MO callbacks (what they share: ``agent.sim.httpstate``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from agent.gateways.presets import generic, jasmin, twilio
from agent.gateways.smpp.constants import status_name
from agent.gateways.smpp.sm import build_receipt_text
from agent.sim.core import ESME_RTHROTTLED, SimCore
from agent.sim.httpstate import (
    SIM_HTTP,
    TEMPORARY,
    SimHttpConfig,
    SimHttpState,
    admit,
    basic_auth,
    call_back,
    due,
    faults_before_answer,
    params,
)
from agent.sms.encoding import analyze, decode_ucs2, encode_gsm7, encode_ucs2, is_gsm7


GENERIC_PATH = "/api/v1/messages"
# Named DLT TLVs Kannel forwards from meta-data (as configured in its smsc group).
_META_TLVS = {"PE_ID": 0x1400, "TEMPLATE_ID": 0x1401, "TM_CHAIN": 0x1402}
_KANNEL_TYPE = {"DELIVRD": 1, "ACCEPTD": 4, "ENROUTE": 4}  # everything else: 2 (non-delivered)
_TWILIO_STATUS = {"DELIVRD": "delivered", "ACCEPTD": "sent", "ENROUTE": "sent",
                  "REJECTD": "failed"}  # everything else: undelivered
_TWILIO_ERROR = {"UNDELIV": "30003", "EXPIRED": "30003", "DELETED": "30005", "UNKNOWN": "30008",
                 "REJECTD": "30007"}
_GENERIC_STATUS = {"DELIVRD": "delivered", "UNDELIV": "undelivered", "EXPIRED": "expired",
                   "REJECTD": "rejected", "DELETED": "undelivered", "UNKNOWN": "unknown",
                   "ACCEPTD": "accepted", "ENROUTE": "accepted"}
_KANNEL_ESCAPE = re.compile(r"%([dATFpPiI])")


def make_http_app(core: SimCore, config: SimHttpConfig | None = None) -> web.Application:
    """An aiohttp app speaking the four presets' send APIs on their real paths."""
    state = SimHttpState(core, config or SimHttpConfig())
    app = web.Application()
    app[SIM_HTTP] = state
    app.router.add_route("*", "/cgi-bin/sendsms", _kannel_send)
    app.router.add_route("*", "/send", _jasmin_send)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", _twilio_send)
    app.router.add_post(GENERIC_PATH, _generic_send)
    app.router.add_get(GENERIC_PATH, _generic_send)  # the same fields as query parameters

    async def mo_listener(sender: str, recipient: str, text: str) -> None:
        await _send_mo(state, sender, recipient, text)

    async def on_startup(app: web.Application) -> None:
        state.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=state.config.callback_timeout))
        core.mo_listeners.append(mo_listener)

    async def on_cleanup(app: web.Application) -> None:
        if mo_listener in core.mo_listeners:
            core.mo_listeners.remove(mo_listener)
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        if state.session is not None:
            await state.session.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


# -- Kannel ----------------------------------------------------------------------------------


async def _kannel_send(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_HTTP]
    p = await params(request)
    cfg = state.config
    if p.get("username") != cfg.username or p.get("password") != cfg.password:
        return web.Response(status=403, text="Authorization failed for sendsms")
    to, text = p.get("to", ""), p.get("text")
    if not to:
        return web.Response(status=400, text="Missing receiver number, rejected")
    if text is None:
        return web.Response(status=400, text="Missing text, rejected")
    await faults_before_answer(state, request)
    status = admit(state, to)
    if status == ESME_RTHROTTLED:
        return web.Response(status=429, text="Throttled, try again later", headers={"Retry-After": "1"})
    if status in TEMPORARY:
        return web.Response(status=503, text="Sending failed.")
    if status:
        return web.Response(status=403, text="Not routable. Do not try again.")  # as smsbox does
    tlvs: dict[int, bytes] = {}
    meta = p.get("meta-data", "")
    if meta.startswith("?smpp?"):
        for k, v in URL("?" + meta[len("?smpp?"):]).query.items():
            if k in _META_TLVS:
                tlvs[_META_TLVS[k]] = v.encode()
    smsc_id = state.core.accept_part(channel="http:kannel", source=p.get("from", ""), dest=to,
                                     text=text, concat=None, tlvs=tlvs)
    dlr_url, mask = p.get("dlr-url"), int(p.get("dlr-mask") or 0)
    if dlr_url and mask:
        state.spawn(_kannel_receipts(state, smsc_id, dlr_url, mask, p.get("from", ""), to, text))
    return web.Response(status=202, text="0: Accepted for delivery")


async def _kannel_receipts(state: SimHttpState, smsc_id: str, url: str, mask: int, sender: str,
                           to: str, text: str) -> None:
    def fill(dlr_type: int, answer: str) -> str:
        values = {"d": str(dlr_type), "A": answer, "T": str(int(time.time())), "F": smsc_id,
                  "p": to, "P": sender, "i": "sim", "I": smsc_id}
        return _KANNEL_ESCAPE.sub(lambda m: quote(values[m.group(1)], safe=""), url)

    if mask & 8:  # SMSC accepted the submit
        await call_back(state, "kannel", "receipt", "GET", fill(8, "ACK/"), expect=None)
    async for _, stat, err in due(state, smsc_id):
        dlr_type = _KANNEL_TYPE.get(stat, 2)
        if mask & dlr_type:
            now = datetime.now(UTC)
            answer = build_receipt_text(smsc_id=smsc_id, stat=stat, err=err, submitted=now,
                                        done=now, text=text)
            await call_back(state, "kannel", "receipt", "GET", fill(dlr_type, answer), expect=None)


# -- Jasmin --------------------------------------------------------------------------------------


async def _jasmin_send(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_HTTP]
    p = await params(request)
    cfg = state.config
    if p.get("username") != cfg.username or p.get("password") != cfg.password:
        return web.Response(status=403, text=f'Error "Authentication failure for username:{p.get("username", "")}"')
    to = p.get("to", "")
    if not to:
        return web.Response(status=400, text='Error "Mandatory argument [to] is not found."')
    coding = p.get("coding", "0")
    if "hex-content" in p:
        try:
            raw = bytes.fromhex(p["hex-content"])
        except ValueError:
            return web.Response(status=400, text='Error "Argument [hex-content] has an invalid value"')
        text = decode_ucs2(raw) if coding == jasmin.CODING_UCS2 else raw.decode("latin-1")
    elif "content" in p:
        text = p["content"]
    else:
        return web.Response(status=400, text='Error "Mandatory argument [content] is not found."')
    await faults_before_answer(state, request)
    # Real Jasmin (0.11) queues the message and answers at once; what the SMSC then says comes
    # back only as receipts. A user over its http_throughput quota gets the same 403 as a
    # bad login, without Retry-After.
    status = admit(state, to)
    if status == ESME_RTHROTTLED:
        return web.Response(status=403, text='Error "User throughput exceeded"')
    jasmin_id = f"{state.core.parts_received:08x}-{time.monotonic_ns() % 10**12:012d}"
    if status:  # the SMSC refused the submit_sm: a level-1 receipt with its status, nothing else
        state.spawn(_jasmin_receipts(state, None, jasmin_id, p, text, status_name(status)))
        return web.Response(status=200, text=f'Success "{jasmin_id}"')
    tlvs: dict[int, bytes] = {}
    for entry in p.get("custom_tlvs") or []:  # [tag, length, type, value]
        if isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], int):
            tlvs[entry[0]] = str(entry[3]).encode()
    smsc_id = state.core.accept_part(channel="http:jasmin", source=p.get("from", ""), dest=to,
                                     text=text, concat=None, tlvs=tlvs)
    msg_id = f"{smsc_id.lower():0>8}-sim0-4000-8000-{smsc_id.lower():0>12}"
    state.spawn(_jasmin_receipts(state, smsc_id, msg_id, p, text, "ESME_ROK"))
    return web.Response(status=200, text=f'Success "{msg_id}"')


async def _jasmin_receipts(state: SimHttpState, smsc_id: str | None, msg_id: str,
                           p: Mapping[str, str], text: str, submit_status: str) -> None:
    """As Jasmin's DLR thrower: each receipt says its own level (1: the submit_sm_resp's
    status, 2: the SMSC's receipt) whatever level was asked."""
    if p.get("dlr") != "yes" or not p.get("dlr-url"):
        return
    url, level, method = p["dlr-url"], p.get("dlr-level", "1"), p.get("dlr-method", "POST").upper()
    if level in ("1", "3"):
        await call_back(state, "jasmin", "receipt", method, url, expect=jasmin.ACK, form={
            "id": msg_id, "message_status": submit_status, "level": "1", "connector": "sim"})
    if level not in ("2", "3") or smsc_id is None:
        return
    async for _, stat, err in due(state, smsc_id):
        d = datetime.now(UTC).strftime("%y%m%d%H%M")
        await call_back(state, "jasmin", "receipt", method, url, expect=jasmin.ACK, form={
            "id": msg_id, "id_smsc": smsc_id, "message_status": stat, "level": "2",
            "subdate": d, "donedate": d, "sub": "001", "dlvrd": "001" if stat == "DELIVRD" else "000",
            "err": err, "text": text[:20], "connector": "sim"})


# -- Twilio --------------------------------------------------------------------------------------


def _twilio_error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return web.json_response(body, status=status, headers=headers)


async def _twilio_send(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_HTTP]
    cfg = state.config
    creds = basic_auth(request)
    sid = request.match_info["sid"]
    if (creds is None or creds != (cfg.account_sid, cfg.auth_token)
            or sid != cfg.account_sid):
        return _twilio_error(401, 20003, "Authenticate")
    p = await params(request)
    to, sender, body = p.get("To", ""), p.get("From", ""), p.get("Body")
    if not to:
        return _twilio_error(400, 21604, "A 'To' phone number is required.")
    if body is None:
        return _twilio_error(400, 21602, "Message body is required.")
    await faults_before_answer(state, request)
    status = admit(state, to)
    if status == ESME_RTHROTTLED:
        return _twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "1"})
    if status in TEMPORARY:
        return _twilio_error(503, 20503, "Service Unavailable")
    if status:
        return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    smsc_id = state.core.accept_part(channel="http:twilio", source=sender, dest=to, text=body,
                                     concat=None)
    msg_sid = "SM" + smsc_id.lower().rjust(32, "0")
    callback = p.get("StatusCallback")
    if callback:
        state.spawn(_twilio_receipts(state, smsc_id, msg_sid, callback, sender, to))
    return web.json_response({
        "sid": msg_sid, "account_sid": cfg.account_sid, "to": to, "from": sender, "body": body,
        "status": "queued", "num_segments": str(analyze(body).segments),
        "api_version": twilio.API_VERSION, "error_code": None, "error_message": None,
    }, status=201)


async def _twilio_receipts(state: SimHttpState, smsc_id: str, msg_sid: str, url: str,
                           sender: str, to: str) -> None:
    base = {"MessageSid": msg_sid, "SmsSid": msg_sid, "AccountSid": state.config.account_sid,
            "From": sender, "To": to, "ApiVersion": twilio.API_VERSION}
    await _twilio_callback(state, url, {**base, "MessageStatus": "sent", "SmsStatus": "sent"})
    async for _, stat, _err in due(state, smsc_id):
        status = _TWILIO_STATUS.get(stat, "undelivered")
        form = {**base, "MessageStatus": status, "SmsStatus": status,
                "RawDlrDoneDate": datetime.now(UTC).strftime("%y%m%d%H%M")}
        if stat in _TWILIO_ERROR:
            form["ErrorCode"] = _TWILIO_ERROR[stat]
        await _twilio_callback(state, url, form, kind="receipt")


async def _twilio_callback(state: SimHttpState, url: str, form: dict[str, str], *,
                           kind: str = "receipt") -> None:
    sig = twilio.signature(state.config.auth_token.encode(), url, form.items())
    await call_back(state, "twilio", kind, "POST", url, form=form, expect=None,
                    headers={twilio.SIGNATURE_HEADER: sig})


# -- generic ------------------------------------------------------------------------------------


async def _generic_send(request: web.Request) -> web.StreamResponse:
    """The simulator's own JSON API: {"to", "from", "text", "reference", "callback_url"}."""
    state = request.app[SIM_HTTP]
    cfg = state.config
    creds = basic_auth(request)
    if creds != (cfg.username, cfg.password):
        return web.json_response({"error": "unauthorized"}, status=401)
    try:
        doc = dict(request.query) if request.method == "GET" else await request.json()
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(doc, dict) or not doc.get("to") or doc.get("text") is None:
        return web.json_response({"error": "'to' and 'text' are required"}, status=400)
    to = str(doc["to"])
    await faults_before_answer(state, request)
    status = admit(state, to)
    if status == ESME_RTHROTTLED:
        return web.json_response({"error": "throttled"}, status=429, headers={"Retry-After": "1"})
    if status in TEMPORARY:
        return web.json_response({"error": "unavailable"}, status=503)
    if status:
        return web.json_response({"error": f"destination refused (SMPP status 0x{status:08X})",
                                  "code": status}, status=400)
    smsc_id = state.core.accept_part(channel="http:generic", source=str(doc.get("from", "")),
                                     dest=to, text=str(doc["text"]), concat=None)
    if doc.get("callback_url"):
        state.spawn(_generic_receipts(state, smsc_id, str(doc["callback_url"]),
                                      str(doc.get("reference") or "")))
    return web.json_response({"data": {"id": smsc_id, "status": "accepted"}})


async def _generic_receipts(state: SimHttpState, smsc_id: str, url: str, reference: str) -> None:
    async for _, stat, err in due(state, smsc_id):
        body = {"id": smsc_id, "reference": reference, "status": _GENERIC_STATUS[stat], "error": err}
        await _generic_callback(state, "receipt", url, body)


async def _generic_callback(state: SimHttpState, kind: str, url: str, doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    sig = generic.sign(state.config.webhook_secret.encode(), int(time.time()), raw)
    await call_back(state, "generic", kind, "POST", url, data=raw, expect=None,
                    headers={"X-Signature": sig, "Content-Type": "application/json"})


# -- MO ------------------------------------------------------------------


async def _send_mo(state: SimHttpState, sender: str, recipient: str, text: str) -> None:
    for preset, url in state.config.mo_urls.items():
        if preset == "kannel":
            u = URL(url).update_query({"from": sender, "to": recipient, "text": text,
                                       "ts": str(int(time.time()))})
            await call_back(state, preset, "inbound", "GET", str(u), expect=None)
        elif preset == "jasmin":
            # As Jasmin 0.11's deliver_sm thrower posts it: content is the short_message's raw
            # octets, coding the data_coding octet itself (not a number), binary their hex.
            coding, raw = (0, encode_gsm7(text)) if is_gsm7(text) else (8, encode_ucs2(text))
            body = urlencode([
                ("id", f"mo-{time.monotonic_ns()}"), ("from", sender), ("to", recipient),
                ("origin-connector", "sim"), ("priority", "0"), ("coding", bytes([coding])),
                ("content", raw), ("binary", raw.hex())])
            await call_back(state, preset, "inbound", "POST", url, expect=jasmin.ACK,
                            data=body.encode(),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        elif preset == "twilio":
            sid = f"SM{time.monotonic_ns():032x}"[-34:]
            await _twilio_callback(state, url, {
                "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
                "AccountSid": state.config.account_sid, "From": sender, "To": recipient,
                "Body": text, "NumMedia": "0", "NumSegments": "1", "ApiVersion": twilio.API_VERSION,
            }, kind="inbound")
        elif preset == "generic":
            await _generic_callback(state, "inbound", url,
                                    {"from": sender, "to": recipient, "text": text})
