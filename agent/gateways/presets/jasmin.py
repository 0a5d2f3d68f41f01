"""Jasmin's ja-http API: the /send request, its response, and its DLR and reply webhooks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from agent.errors import GatewayAmbiguousError, GatewayTemporaryError
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
    verify_url_token,
)
from agent.gateways.presets.common import (
    HttpGatewayConfig,
    HttpRequest,
    error_for_status,
    format_number,
)
from agent.gateways.smpp.sm import STAT_STATES, decode_text, parse_receipt_date
from agent.models import OutboundSms, Receipt, ReceiptState
from agent.sms.encoding import analyze, encode_ucs2

ACK = "ACK/Jasmin"  # exactly this body, or Jasmin's DLR/MO throwers send the callback again

# SMPP data_coding values: 0 SMSC default alphabet, 8 UCS-2.
CODING_GSM7, CODING_UCS2 = "0", "8"

_SUCCESS = re.compile(r'^Success\s+"([^"]+)"')
_ERROR = re.compile(r'^Error\s+"(.*)"', re.DOTALL)

def build_submit(cfg: HttpGatewayConfig, sms: OutboundSms) -> HttpRequest:
    assert cfg.username is not None and cfg.password is not None  # checked by the config
    encoding = sms.encoding or analyze(sms.text).encoding
    form: list[tuple[str, str]] = [
        ("username", cfg.username),
        ("password", cfg.password.get_secret_value()),
        ("to", format_number(sms.to, cfg.strip_plus)),
        ("from", sms.sender),
    ]
    if encoding == "GSM-7":
        form += [("coding", CODING_GSM7), ("content", sms.text)]
    else:
        # hex-content carries the exact UCS-2 octets; "content" would depend on how the
        # Jasmin version at hand decodes form bytes.
        form += [("coding", CODING_UCS2), ("hex-content", encode_ucs2(sms.text).hex())]
    dlr_url = cfg.receipt_url(sms.message_id) if sms.request_receipt else None
    if dlr_url:
        form += [("dlr", "yes"), ("dlr-url", dlr_url), ("dlr-level", "3"), ("dlr-method", "POST")]
    form += sorted(cfg.extra_params.items())
    tlvs = custom_tlvs(cfg, sms)
    if tlvs:
        # Jasmin reads custom_tlvs only from a JSON body (a form value cannot be a list).
        return HttpRequest(method="POST", url=cfg.endpoint,
                           json={**dict(form), "custom_tlvs": tlvs})
    return HttpRequest(method="POST", url=cfg.endpoint, form=tuple(form))


def custom_tlvs(cfg: HttpGatewayConfig, sms: OutboundSms) -> list[list[object]]:
    """India DLT ids as Jasmin's ``custom_tlvs``: ``[tag, length, type, value]`` entries (length
    null: Jasmin measures the value), tags from rules.yaml ``dlt_tlvs``."""
    values = {"dlt_entity_id": sms.dlt_entity_id, "dlt_template_id": sms.dlt_template_id,
              "dlt_chain_id": cfg.dlt_chain_id}
    tags = {"dlt_chain_id": "0x1402", **cfg.dlt_tlvs}  # the chain goes even unmapped
    return [[int(tag, 0), None, "OctetString", values[key]]
            for key, tag in sorted(tags.items()) if values[key]]


def parse_submit(
    cfg: HttpGatewayConfig, status: int, headers: Mapping[str, str], body: bytes
) -> str | None:
    text = body.decode("utf-8", "replace").strip()
    if 200 <= status < 300:
        m = _SUCCESS.match(text)
        if m:
            return m.group(1)
        raise GatewayAmbiguousError(
            f"gateway {cfg.name}: HTTP {status} with unexpected body {text[:80]!r}",
            code=status, reason="unexpected_response",
        )
    m = _ERROR.match(text)
    detail = m.group(1) if m else text
    err = error_for_status(cfg.name, status, detail, reason=_error_reason(status, detail))
    if _TRANSIENT.search(detail):
        # Jasmin answers these with 403/412 too, but they pass: a user over its http_throughput
        # quota, a failover route whose connectors are all down right now.
        raise GatewayTemporaryError(str(err), code=status, reason=err.reason)
    raise err


# Jasmin's /send answers many different refusals with one HTTP status (jasmin/protocols/http/
# errors.py): 403 is a bad login, an exhausted balance or a throughput quota; 412 no route or
# no bound connector. The message says which.
_TRANSIENT = re.compile(r"throughput exceeded|no bound connector", re.IGNORECASE)


def _error_reason(status: int, detail: str) -> str | None:
    d = detail.lower()
    if "authentication failure" in d:
        return "auth_failed"
    if "throughput exceeded" in d:
        return "throttled"
    if "no bound connector" in d:
        return "connector_down"
    if "charge" in d or "balance" in d:
        return "no_credit"
    if status == 412:
        return "no_route"
    if status == 403:
        return "rejected"  # another refusal than the login's: this message, not the gateway
    return None


def receipt_state(message_status: str) -> ReceiptState:
    """A level-1 DLR carries an SMPP command status (ESME_ROK: the SMSC took it); a level-2
    one the receipt's stat word."""
    s = message_status.strip().upper()
    if s.startswith("ESME_"):
        return ReceiptState.ACCEPTED if s == "ESME_ROK" else ReceiptState.REJECTED
    # Terminal-level (2/3) message_status values are the SMPP receipt stat words.
    return STAT_STATES.get(s, ReceiptState.UNKNOWN)


# -- webhooks: DLRs at the dlr-url, replies from the HTTP client connector -----------------------

SIGNED = False  # Jasmin cannot sign: its URLs carry our token (callbacks.verify_url_token)


def verify_webhook(cfg: HttpGatewayConfig, kind: Kind, req: WebhookRequest, where: str,
                   secret: bytes, now: datetime) -> None:
    verify_url_token(cfg, kind, req, where, secret)


def webhook_nonce(cfg: HttpGatewayConfig, req: WebhookRequest) -> str | None:
    return None  # the whole request: a resend (not acknowledged) is the same bytes


def parse_receipt(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> Receipt:
    p = params(req)
    status = field(p, "message_status", where)
    return Receipt(
        gateway=cfg.name, state=receipt_state(status), smsc_id=field(p, "id", where),
        message_id=opt(dict(pairs(req.query)), "mid"), error_code=opt(p, "err"),
        done_at=parse_receipt_date(opt(p, "donedate")), raw=params_raw(p),
    )


def mo_data_coding(value: str | None, where: str) -> int | None:
    """The MO's SMPP data_coding. Jasmin's deliver_sm thrower posts ``coding`` as the PDU's raw
    octet (0.11: a form value of one byte, %08 for UCS-2), its documentation as a number
    ("8"): take either."""
    if not value:
        return None
    coding = number(value, 3)
    if coding is not None:
        return coding
    if len(value) == 1 and ord(value) < 0x100:
        return ord(value)
    raise WebhookPayloadError(f"{where}: field 'coding' is not a data_coding: {value[:8]!r}")


def parse_inbound(cfg: HttpGatewayConfig, req: WebhookRequest, where: str) -> tuple[str, str, str]:
    p = params(req)
    sender, recipient = field(p, "from", where), field(p, "to", where)
    # ``content`` is the short_message's raw octets (UCS-2 bytes, GSM 03.38 septets) pushed
    # through a form; ``binary`` is the same octets in hex: decode those by the data coding.
    binary, coding = opt(p, "binary"), mo_data_coding(p.get("coding"), where)
    if binary is not None and coding is not None:
        try:
            raw = bytes.fromhex(binary)
        except ValueError:
            raise WebhookPayloadError(f"{where}: field 'binary' is not hex") from None
        return sender, recipient, decode_text(coding, raw)
    return sender, recipient, p.get("content", "")


def ack(kind: Kind) -> Ack:
    return Ack(200, ACK, "text/plain")  # exactly this, or Jasmin sends the callback again
