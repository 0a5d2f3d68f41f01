"""A generic JSON HTTP gateway: templated request body, dotted-path response id, HMAC-SHA256 signing.

Webhook signature (what a generic gateway, or a relay in front of one, must send):
``{signature_header}: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>." + raw body)>``.
The timestamp bounds replays to ``signature_tolerance`` seconds; the v1 value is the nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.gateways.presets.callbacks import (
    Ack,
    Kind,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookRequest,
    header,
    json_body,
    number,
    opt,
    params,
)
from agent.gateways.presets.common import (
    HttpGatewayConfig,
    HttpRequest,
    error_for_status,
    render_template,
)
from agent.models import OutboundSms, Receipt, ReceiptState
from agent.sms.encoding import analyze

_MISSING = object()


def template_values(cfg: HttpGatewayConfig, sms: OutboundSms) -> dict[str, str]:
    return {
        "to": sms.to,
        "to_digits": sms.to.lstrip("+"),
        "sender": sms.sender,
        "text": sms.text,
        "message_id": sms.message_id,
        "callback_url": (cfg.receipt_url(sms.message_id) or "") if sms.request_receipt else "",
        "dlt_template_id": sms.dlt_template_id or "",
        "dlt_entity_id": sms.dlt_entity_id or "",
        "dlt_chain_id": cfg.dlt_chain_id or "",
        "encoding": sms.encoding or analyze(sms.text).encoding,
    }


def build_submit(cfg: HttpGatewayConfig, sms: OutboundSms) -> HttpRequest:
    assert cfg.request_template is not None
    body = render_template(cfg.request_template, template_values(cfg, sms))
    headers = {k: v.get_secret_value() for k, v in cfg.headers.items()}
    auth = None
    if cfg.username is not None and cfg.password is not None:
        auth = (cfg.username, cfg.password.get_secret_value())
    if cfg.method == "GET":
        # A flat template (checked at load): each key one query parameter.
        query = tuple((k, "" if v is None else str(v)) for k, v in body.items())
        return HttpRequest(method="GET", url=cfg.endpoint, query=query, headers=headers,
                           basic_auth=auth)
    return HttpRequest(method="POST", url=cfg.endpoint, json=body, headers=headers, basic_auth=auth)


def dig(doc: Any, path: str) -> Any:
    """Follow a dotted path ("data.messages.0.id") through dicts and lists; _MISSING if absent."""
    node = doc
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def is_missing(value: Any) -> bool:
    return value is _MISSING


def parse_submit(
    cfg: HttpGatewayConfig, status: int, headers: Mapping[str, str], body: bytes
) -> str | None:
    """The gateway's id at ``response_id_path``; None when 2xx but no id (receipts still find
    the row by our message id, which the template is expected to pass as a reference)."""
    if 200 <= status < 300:
        if not cfg.response_id_path:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        value = dig(doc, cfg.response_id_path)
        return None if is_missing(value) or value is None else str(value)
    raise error_for_status(cfg.name, status, body.decode("utf-8", "replace"))


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_signature(value: str) -> tuple[int, str] | None:
    """(timestamp, v1 hex) from a signature header, None when malformed."""
    parts: dict[str, str] = {}
    for item in value.split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            parts[k] = v
    t, v1 = number(parts.get("t"), 12), parts.get("v1")
    if t is None or not v1:
        return None
    return t, v1


# -- webhooks: signed JSON receipts and replies --------------------------------------------------

SIGNED = True


def verify_webhook(cfg: HttpGatewayConfig, kind: Kind, req: WebhookRequest, where: str,
                   secret: bytes, now: datetime) -> None:
    """``t`` within ``signature_tolerance`` of now and a matching v1 (module docstring)."""
    value = header(req, cfg.signature_header)
    if not value:
        raise WebhookAuthError(f"{where}: missing {cfg.signature_header} header")
    parsed = parse_signature(value)
    if parsed is None:
        raise WebhookAuthError(f"{where}: malformed {cfg.signature_header} header")
    ts, v1 = parsed
    skew = abs(now.timestamp() - ts)
    if skew > cfg.signature_tolerance:
        raise WebhookAuthError(
            f"{where}: timestamp {skew:.0f}s away from now (tolerance "
            f"{cfg.signature_tolerance:.0f}s): stale or replayed")
    expected = sign(secret, ts, req.body).split("v1=", 1)[1]
    if not hmac.compare_digest(v1.encode(), expected.encode()):
        raise WebhookAuthError(f"{where}: bad signature")


def webhook_nonce(cfg: HttpGatewayConfig, req: WebhookRequest) -> str | None:
    parsed = parse_signature(header(req, cfg.signature_header) or "")
    return f"{cfg.name}:{parsed[1]}" if parsed else None  # each v1 is accepted once


def _getter(fields: Mapping[str, str], doc: Any) -> Any:
    def get(name: str) -> str | None:
        path = fields.get(name)
        if not path:
            return None
        v = dig(doc, path)
        return None if is_missing(v) or v is None else str(v)

    return get


def parse_receipt(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> Receipt:
    """Fields found at rules.yaml's ``receipt_fields`` paths, states through ``status_map``."""
    get = _getter(cfg.receipt_fields, json_body(req, where))
    status = get("status")
    if status is None:
        raise WebhookPayloadError(f"{where}: missing field {cfg.receipt_fields.get('status')!r}")
    status_map = {k.lower(): v for k, v in cfg.status_map.items()}
    mapped = status_map.get(status.lower())
    # The signature covers the body, not the URL: a URL mid that disagrees with the signed
    # body is a captured receipt pointed at another message.
    body_mid, url_mid = get("message_id"), opt(params(req), "mid")
    if body_mid and url_mid and body_mid != url_mid:
        raise WebhookAuthError(f"{where}: the URL's mid disagrees with the signed body")
    return Receipt(
        gateway=cfg.name, state=ReceiptState(mapped) if mapped else ReceiptState.UNKNOWN,
        smsc_id=get("smsc_id"), message_id=body_mid or url_mid,
        error_code=get("error_code"), done_at=None, raw=req.body.decode("utf-8", "replace"),
    )


def parse_inbound(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> tuple[str, str, str]:
    get = _getter(cfg.inbound_fields, json_body(req, where))
    values = {k: get(k) for k in ("sender", "recipient", "text")}
    for k in ("sender", "recipient"):
        if not values[k]:
            raise WebhookPayloadError(f"{where}: missing field {cfg.inbound_fields.get(k)!r}")
    return values["sender"] or "", values["recipient"] or "", values["text"] or ""


def ack(kind: Kind) -> Ack:
    return Ack(200, '{"ok":true}', "application/json")
