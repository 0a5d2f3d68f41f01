"""Kannel smsbox: the /cgi-bin/sendsms request, its response, and its DLR and reply webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

from agent.errors import GatewayAmbiguousError
from agent.gateways.presets.callbacks import (
    Ack,
    Kind,
    WebhookPayloadError,
    WebhookRequest,
    field,
    number,
    opt,
    pairs,
    params,
    params_raw,
    unix_time,
    verify_url_token,
)
from agent.gateways.presets.common import (
    HttpGatewayConfig,
    HttpRequest,
    error_for_status,
    format_number,
)
from agent.gateways.smpp.sm import parse_receipt_fields
from agent.models import OutboundSms, Receipt, ReceiptState
from agent.sms.encoding import analyze

# dlr-mask bits (Kannel user guide, sendsms CGI): 1 delivered to phone, 2 non-delivered to
# phone, 4 queued on SMSC, 8 delivered to SMSC (submit ack), 16 non-delivered to SMSC (reject).
DLR_DELIVERED, DLR_UNDELIVERED, DLR_BUFFERED, DLR_SMSC_ACK, DLR_SMSC_REJECT = 1, 2, 4, 8, 16
DLR_MASK = 31

# sendsms "coding": 0 = 7-bit, 1 = 8-bit, 2 = UCS-2. With charset=UTF-8 Kannel converts the
# UTF-8 text to the coding's alphabet itself.
CODING_GSM7, CODING_UCS2 = "0", "2"

# Kannel escape codes filled in when it fetches the dlr-url: %d DLR type, %A the SMSC's reply
# (the SMPP receipt text), %T unix time, %F the SMSC's message id.
DLR_PLACEHOLDERS = {"type": "%d", "answer": "%A", "ts": "%T", "fid": "%F"}

# A submit Kannel has taken: "0: Accepted for delivery", "3: Queued for later delivery" when no
# SMSC link is up (it is stored and sent later, so still accepted), or "Sent." when smsbox has
# ``immediate-sendsms-reply = true`` (it answers 202 before bearerbox has the message).
ACCEPTED_PREFIXES = ("0:", "3:", "Sent.")

# smsbox answers 403 both for bad credentials and for a message no SMSC route takes; only the
# first says anything about the gateway.
NOT_ROUTABLE = "not routable"


def build_submit(cfg: HttpGatewayConfig, sms: OutboundSms) -> HttpRequest:
    assert cfg.username is not None and cfg.password is not None  # checked by the config
    encoding = sms.encoding or analyze(sms.text).encoding
    q: list[tuple[str, str]] = [
        ("username", cfg.username),
        ("password", cfg.password.get_secret_value()),
        ("from", sms.sender),
        ("to", format_number(sms.to, cfg.strip_plus)),
        ("text", sms.text),
        ("coding", CODING_GSM7 if encoding == "GSM-7" else CODING_UCS2),
        ("charset", "UTF-8"),
    ]
    dlr_url = cfg.receipt_url(sms.message_id, **DLR_PLACEHOLDERS) if sms.request_receipt else None
    if dlr_url:
        # yarl quoted the placeholders' "%"; Kannel must see them bare to substitute them.
        for v in DLR_PLACEHOLDERS.values():
            dlr_url = dlr_url.replace("%25" + v[1], v)
        q += [("dlr-mask", str(DLR_MASK)), ("dlr-url", dlr_url)]
    meta = meta_data(cfg, sms)
    if meta:
        q.append(("meta-data", meta))
    q += sorted(cfg.extra_params.items())
    return HttpRequest(method="GET", url=cfg.endpoint, query=tuple(q))


def meta_data(cfg: HttpGatewayConfig, sms: OutboundSms) -> str | None:
    """India DLT ids for Kannel's SMPP link: ``?smpp?NAME=value&...`` where each NAME is an
    smpp-tlv group in kannel.conf (rules.yaml ``dlt_tlvs``); Kannel adds them as TLVs."""
    values = {"dlt_entity_id": sms.dlt_entity_id, "dlt_template_id": sms.dlt_template_id,
              "dlt_chain_id": cfg.dlt_chain_id}
    parts = [f"{quote(name, safe='')}={quote(values[key] or '', safe='')}"
             for key, name in sorted(cfg.dlt_tlvs.items()) if values[key]]
    return "?smpp?" + "&".join(parts) if parts else None


def parse_submit(
    cfg: HttpGatewayConfig, status: int, headers: Mapping[str, str], body: bytes
) -> str | None:
    """Kannel's sendsms answer carries no message id: receipts find our row by ``mid``."""
    text = body.decode("utf-8", "replace").strip()
    if 200 <= status < 300:
        if text.startswith(ACCEPTED_PREFIXES):
            return None
        # 2xx with a body we do not know: Kannel may have queued it, so never resend.
        raise GatewayAmbiguousError(
            f"gateway {cfg.name}: HTTP {status} with unexpected body {text[:80]!r}",
            code=status, reason="unexpected_response",
        )
    reason = "auth_failed" if status in (401, 403) else None
    if status in (400, 403) and NOT_ROUTABLE in text.lower():
        reason = "no_route"  # "Not routable. Do not try again.": this message, not the gateway
    raise error_for_status(cfg.name, status, text, reason=reason)


def receipt_state(dlr_type: int, stat: str | None) -> ReceiptState:
    """State for a Kannel DLR; the SMPP ``stat:`` from %A refines a non-delivery."""
    if dlr_type & DLR_DELIVERED:
        return ReceiptState.DELIVERED
    if dlr_type & DLR_UNDELIVERED:
        if stat == "EXPIRED":
            return ReceiptState.EXPIRED
        if stat == "REJECTD":
            return ReceiptState.REJECTED
        return ReceiptState.UNDELIVERED
    if dlr_type & DLR_SMSC_REJECT:
        return ReceiptState.REJECTED
    if dlr_type & (DLR_BUFFERED | DLR_SMSC_ACK):
        return ReceiptState.ACCEPTED
    return ReceiptState.UNKNOWN


# -- webhooks: DLRs at the dlr-url, replies at the sms-service get-url --------------------------

SIGNED = False  # Kannel cannot sign: its URLs carry our token (callbacks.verify_url_token)


def verify_webhook(cfg: HttpGatewayConfig, kind: Kind, req: WebhookRequest, where: str,
                   secret: bytes, now: datetime) -> None:
    verify_url_token(cfg, kind, req, where, secret)


def webhook_nonce(cfg: HttpGatewayConfig, req: WebhookRequest) -> str | None:
    return None  # the whole request: Kannel calls each dlr-url once per report


def parse_receipt(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> Receipt:
    p = params(req)
    type_s = field(p, "type", where)
    dlr_type = number(type_s)
    if dlr_type is None:
        raise WebhookPayloadError(
            f"{where}: field 'type' is {type_s[:20]!r}, expected the DLR type number")
    answer = opt(p, "answer") or ""
    fields = parse_receipt_fields(answer)
    return Receipt(
        gateway=cfg.name, state=receipt_state(dlr_type, fields.get("stat")),
        smsc_id=opt(p, "fid") or fields.get("id"),
        message_id=field(dict(pairs(req.query)), "mid", where),
        error_code=fields.get("err"), done_at=unix_time(opt(p, "ts")), raw=params_raw(p),
    )


def parse_inbound(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> tuple[str, str, str]:
    p = params(req)
    return field(p, "from", where), field(p, "to", where), p.get("text", "")


def ack(kind: Kind) -> Ack:
    return Ack(200, "OK", "text/plain")
