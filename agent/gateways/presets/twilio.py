"""Twilio's Messages API: the create request, its response, and its signed status and reply webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from agent.errors import GatewayAmbiguousError
from agent.gateways.presets.callbacks import (
    Ack,
    Kind,
    WebhookAuthError,
    WebhookRequest,
    field,
    header,
    opt,
    pairs,
    params,
    params_raw,
)
from agent.gateways.presets.common import HttpGatewayConfig, HttpRequest, error_for_status
from agent.gateways.smpp.sm import parse_receipt_date
from agent.models import OutboundSms, Receipt, ReceiptState

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


# -- webhooks: status callbacks and the messaging webhook ----------------------------------------

SIGNED = True


def verify_webhook(cfg: HttpGatewayConfig, kind: Kind, req: WebhookRequest, where: str,
                   secret: bytes, now: datetime) -> None:
    """X-Twilio-Signature for the URL with and without its port (Twilio's own validators try
    both); JSON bodies via the ``bodySHA256`` query parameter."""
    sig = header(req, SIGNATURE_HEADER)
    if not sig:
        raise WebhookAuthError(f"{where}: missing {SIGNATURE_HEADER} header")
    signed = pairs(req.form) if req.method.upper() == "POST" else []
    body_hash = dict(pairs(req.query)).get("bodySHA256")
    if body_hash is not None and not req.form:
        computed = hashlib.sha256(req.body).hexdigest()
        if not hmac.compare_digest(computed.encode(), body_hash.encode()):
            raise WebhookAuthError(f"{where}: body does not match bodySHA256")
        signed = []
    ok = False
    for url in url_variants(req.url):
        ok |= hmac.compare_digest(signature(secret, url, signed).encode(), sig.encode())
    if not ok:
        raise WebhookAuthError(f"{where}: bad {SIGNATURE_HEADER}")


def webhook_nonce(cfg: HttpGatewayConfig, req: WebhookRequest) -> str | None:
    """The signed MessageSid, not the unsigned I-Twilio-Idempotency-Token header: a captured
    START replayed with a fresh header is still the same message. A status callback comes once
    per status for one sid."""
    p = dict(pairs(req.form)) if req.method.upper() == "POST" else dict(pairs(req.query))
    sid = p.get("MessageSid") or p.get("SmsSid")
    if sid:
        return f"{cfg.name}:{sid}:{p.get('MessageStatus', p.get('SmsStatus', ''))}"
    return None


def _check_account(cfg: HttpGatewayConfig, p: Mapping[str, str], where: str) -> None:
    sid = p.get("AccountSid")
    if sid is not None and cfg.account_sid and sid != cfg.account_sid:
        raise WebhookAuthError(f"{where}: AccountSid is not this gateway's account")


def parse_receipt(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> Receipt:
    p = params(req)
    _check_account(cfg, p, where)
    status = field(p, "MessageStatus", where).lower()
    return Receipt(
        gateway=cfg.name, state=STATUS_STATES.get(status, ReceiptState.UNKNOWN),
        smsc_id=field(p, "MessageSid", where), message_id=opt(p, "mid"),
        error_code=opt(p, "ErrorCode"), done_at=parse_receipt_date(opt(p, "RawDlrDoneDate")),
        raw=params_raw(p),
    )


def parse_inbound(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> tuple[str, str, str]:
    p = params(req)
    _check_account(cfg, p, where)
    return field(p, "From", where), field(p, "To", where), p.get("Body", "")


def ack(kind: Kind) -> Ack:
    if kind is Kind.INBOUND:
        return Ack(200, EMPTY_TWIML, "text/xml")
    return Ack(200, "", "text/plain")
