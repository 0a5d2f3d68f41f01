"""Twilio's Messages API: the create request, its response, status mapping and request signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from agent.errors import GatewayAmbiguousError
from agent.gateways.presets.common import HttpGatewayConfig, HttpRequest, error_for_status
from agent.models import OutboundSms, ReceiptState

API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

STATUS_STATES: dict[str, ReceiptState] = {
    "accepted": ReceiptState.ACCEPTED,
    "scheduled": ReceiptState.ACCEPTED,
    "queued": ReceiptState.ACCEPTED,
    "sending": ReceiptState.ACCEPTED,
    "sent": ReceiptState.ACCEPTED,
    "delivered": ReceiptState.DELIVERED,
    "read": ReceiptState.DELIVERED,
    "undelivered": ReceiptState.UNDELIVERED,
    # "failed": never left Twilio (queue overflow, account, content): not sent at all.
    "failed": ReceiptState.REJECTED,
    "canceled": ReceiptState.REJECTED,
}

# Twilio error codes that name the destination, for reports.
_INVALID_DEST = {21211, 21214, 21265, 21408, 21612, 21614}
_OPTED_OUT = {21610}


def messages_url(cfg: HttpGatewayConfig) -> str:
    assert cfg.account_sid is not None
    return f"{cfg.endpoint}/{API_VERSION}/Accounts/{cfg.account_sid}/Messages.json"


def build_submit(cfg: HttpGatewayConfig, sms: OutboundSms) -> HttpRequest:
    assert cfg.account_sid is not None and cfg.auth_token is not None
    form: list[tuple[str, str]] = [("To", sms.to), ("From", sms.sender), ("Body", sms.text)]
    callback = cfg.receipt_url(sms.message_id) if sms.request_receipt else None
    if callback:
        form.append(("StatusCallback", callback))
    form += sorted(cfg.extra_params.items())
    return HttpRequest(
        method="POST", url=messages_url(cfg), form=tuple(form),
        basic_auth=(cfg.account_sid, cfg.auth_token.get_secret_value()),
    )


def parse_submit(
    cfg: HttpGatewayConfig, status: int, headers: Mapping[str, str], body: bytes
) -> str | None:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        doc = None
    if 200 <= status < 300:
        sid = doc.get("sid") if isinstance(doc, dict) else None
        if isinstance(sid, str) and sid:
            return sid
        raise GatewayAmbiguousError(
            f"gateway {cfg.name}: HTTP {status} without a message sid",
            code=status, reason="unexpected_response",
        )
    code = doc.get("code") if isinstance(doc, dict) else None
    message = str(doc.get("message", "")) if isinstance(doc, dict) else body.decode("utf-8", "replace")
    reason = None
    if code in _INVALID_DEST:
        reason = "invalid_destination"
    elif code in _OPTED_OUT:
        reason = "opted_out"
    raise error_for_status(cfg.name, status, message, code=code, reason=reason)


def signature(auth_token: bytes, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each POST parameter name and
    value concatenated, sorted by name then value)). For GET callbacks ``params`` is empty
    (the query is already part of the URL)."""
    s = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token, s.encode("utf-8"), hashlib.sha1).digest()).decode()


def url_variants(url: str) -> tuple[str, str]:
    """The URL with and without its port: Twilio signs whichever form it was configured with,
    and an explicit default port may or may not be in it (Twilio's own validators try both)."""
    u = urlsplit(url)
    host = u.netloc.rsplit("@", 1)[-1]
    userinfo = u.netloc[: len(u.netloc) - len(host)]
    bare = host.split(":")[0] if not host.startswith("[") else host.split("]")[0] + "]"
    port = u.port or (443 if u.scheme == "https" else 80)
    with_port = urlunsplit(u._replace(netloc=f"{userinfo}{bare}:{port}"))
    without = urlunsplit(u._replace(netloc=f"{userinfo}{bare}"))
    return with_port, without
