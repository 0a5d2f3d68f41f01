"""Receipt and reply webhooks of HTTP gateways: authenticate, de-duplicate and parse them (pure, no I/O).

The web layer mounts ``/webhooks/{gateway}/receipt`` and ``/webhooks/{gateway}/inbound``, turns
each request into a ``WebhookRequest`` (``url`` exactly as the gateway called it: the public
``callback_base`` form, not the address behind a proxy) and calls ``handle``. Answer with the
returned ``ack``; on ``WebhookReplayError`` answer the ack too (it was processed before, and
Jasmin resends anything it did not see acknowledged); on ``WebhookAuthError`` 403; on
``WebhookPayloadError`` 400. If processing a verified webhook fails, call
``replay.discard(outcome.nonce)`` so the gateway's retry is not taken for a replay.

How each preset is authenticated:

* **twilio**: ``X-Twilio-Signature`` (HMAC-SHA1 with the auth token over the URL and the sorted
  POST parameters, base64), checked for the URL with and without its port as Twilio's own
  validators do; JSON bodies via the ``bodySHA256`` query parameter. Twilio sends no timestamp,
  so replays are caught by nonce: the signed ``MessageSid`` (with ``MessageStatus`` for status
  callbacks), never the unsigned ``I-Twilio-Idempotency-Token`` header, which a replayer
  can change at will.
* **generic**: ``{signature_header}: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``;
  ``t`` must be within ``signature_tolerance`` of now, and each v1 is accepted once.
* **kannel**, **jasmin**: these gateways cannot sign, so the agent puts a token in the URLs it
  gives them: receipts ``?mid=<our message id>&t=<HMAC-SHA256(webhook_secret, "receipt",
  gateway, mid)>`` (in every dlr-url), replies ``?t=<HMAC(webhook_secret, "inbound", gateway)>``
  (configure ``HttpGatewayConfig.inbound_url()`` as Kannel's sms-service get-url with
  ``&from=%p&to=%P&text=%a&ts=%T`` appended and ``mo-recode = true``, or as Jasmin's HTTP client
  connector baseurl). A forged receipt would need the secret; an identical request twice is a
  replay. The receipt token covers ``mid``: a form field (Jasmin POSTs its fields) can't
  name another message, and one that tries is refused.
  The reply URL is a **bearer secret**: whoever holds it can post replies as any number. So a
  reply from it is ``authenticated`` (START opts a number back in) only when the gateway's
  ``allowed_sources`` (addresses or networks) is set and the request's peer is in it.

``allowed_sources``, when set, refuses any webhook of that gateway (every preset) from another
peer address. The peer is the TCP peer, never a forwarding header.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.errors import AftercallError, ProtocolError
from agent.gateways.presets import generic, jasmin, kannel, twilio
from agent.gateways.presets.common import HttpGatewayConfig, Preset, callback_token
from agent.gateways.smpp.sm import parse_receipt_date, parse_receipt_fields
from agent.models import InboundSms, Receipt, ReceiptState
from agent.sms.encoding import decode_ucs2

__all__ = [
    "Ack", "Kind", "ReplayCache", "WebhookAuthError", "WebhookOutcome", "WebhookPayloadError",
    "WebhookReplayError", "WebhookRequest", "ack_for", "handle", "parse_inbound", "parse_receipt",
    "request_nonce", "verify",
]


class WebhookAuthError(AftercallError):
    """A webhook that cannot be shown to come from the gateway: answer 403, process nothing."""


class WebhookReplayError(WebhookAuthError):
    """An authentic webhook seen before: acknowledge it, do not process it again."""


class WebhookPayloadError(ProtocolError):
    """An authentic webhook whose fields are missing or malformed (names the field)."""


class Kind(enum.StrEnum):
    RECEIPT = "receipt"
    INBOUND = "inbound"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    method: str
    url: str  # full URL as the gateway requested it, query included
    headers: Mapping[str, str]
    query: Mapping[str, str]
    form: Mapping[str, str] | None = None
    body: bytes = b""
    remote: str | None = None  # the TCP peer's address


@dataclass(frozen=True, slots=True)
class Ack:
    status: int
    body: str
    content_type: str


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    receipt: Receipt | None
    inbound: InboundSms | None
    ack: Ack
    nonce: str


class ReplayCache:
    """Nonces seen in the last ``ttl`` seconds, at most ``max_entries`` (oldest forgotten first).
    Owned by the web layer, one for all gateways; keys are prefixed by gateway name."""

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 86_400.0) -> None:
        self._max, self._ttl = max_entries, ttl
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str, now: float) -> bool:
        """True if ``key`` was recorded and has not expired; records it otherwise."""
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[oldest]
        if key in self._seen:
            return True
        self._seen[key] = now + self._ttl
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return False

    def discard(self, key: str) -> None:
        self._seen.pop(key, None)


# -- helpers -------------------------------------------------------------------------------------


def _header(req: WebhookRequest, name: str) -> str | None:
    lname = name.lower()
    for k, v in req.headers.items():
        if k.lower() == lname:
            return v
    return None


def _pairs(m: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if not m:
        return []
    getall = getattr(m, "getall", None)
    if getall is not None:
        return [(k, str(v)) for k in dict.fromkeys(m) for v in getall(k)]
    return [(k, str(v)) for k, v in m.items()]


def _params(req: WebhookRequest) -> dict[str, str]:
    """Query and form merged; the form wins (Jasmin POSTs its fields to a URL with our query)."""
    return {**dict(_pairs(req.query)), **dict(_pairs(req.form))}


def _field(p: Mapping[str, str], name: str, where: str) -> str:
    v = p.get(name)
    if v is None or v == "":
        raise WebhookPayloadError(f"{where}: missing field {name!r}")
    return v


def _opt(p: Mapping[str, str], name: str) -> str | None:
    v = p.get(name)
    # Kannel leaves an escape it does not know (old versions and %F) in the URL as is.
    return None if v is None or v == "" or (len(v) == 2 and v.startswith("%")) else v


def _number(value: str | None, max_digits: int = 20) -> int | None:
    """A decimal field as an int, None unless it is a few plain ASCII digits: str.isdigit()
    also accepts superscripts, which int() refuses, and int() refuses over 4300 digits."""
    if not value or len(value) > max_digits or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _unix_time(value: str | None) -> datetime | None:
    """Kannel's %T; None when absent or outside what datetime can hold."""
    seconds = _number(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _json_body(req: WebhookRequest, where: str) -> Any:
    try:
        return json.loads(req.body)
    except json.JSONDecodeError as exc:
        raise WebhookPayloadError(f"{where}: body is not JSON ({exc.msg} at {exc.pos})") from None
    except UnicodeDecodeError:
        raise WebhookPayloadError(f"{where}: body is not UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:
        # Valid JSON Python will not read: an integer over 4300 digits, arrays nested past
        # the recursion limit. A sender's mistake like any other, not a 500.
        what = "nested too deeply" if isinstance(exc, RecursionError) else "a number too long"
        raise WebhookPayloadError(f"{where}: body is not JSON we can read ({what})") from None


def _digest(req: WebhookRequest) -> str:
    h = hashlib.sha256()
    for part in (req.method.upper(), req.url, *(f"{k}={v}" for k, v in sorted(_pairs(req.form)))):
        h.update(part.encode() + b"\x00")
    h.update(req.body)
    return h.hexdigest()


# -- verification ------------------------------------------------------------------------------


def verify(
    config: HttpGatewayConfig, kind: Kind, req: WebhookRequest, *, now: datetime,
    replay: ReplayCache | None = None,
) -> None:
    """Raise WebhookAuthError unless ``req`` provably comes from the gateway; with ``replay``
    also WebhookReplayError for a nonce seen before (recording it otherwise)."""
    where = f"gateway {config.name} {kind.value} webhook"
    secret = config.secret()
    if config.allowed_sources and not source_allowed(config, req.remote):
        raise WebhookAuthError(f"{where}: peer {req.remote} is not in allowed_sources")
    if config.preset in (Preset.KANNEL, Preset.JASMIN):
        q = dict(_pairs(req.query))
        token = q.get("t")
        if not token:
            raise WebhookAuthError(f"{where}: missing token parameter 't'")
        mid = q.get("mid", "") if kind is Kind.RECEIPT else ""
        if kind is Kind.RECEIPT and not mid:
            raise WebhookAuthError(f"{where}: missing message id parameter 'mid'")
        expected = callback_token(secret, kind.value, config.name, mid)
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise WebhookAuthError(f"{where}: bad token")
        form = dict(_pairs(req.form))
        for key in ("mid", "t"):
            if key in form and form[key] != q.get(key):
                raise WebhookAuthError(
                    f"{where}: form field {key!r} disagrees with the token-checked URL")
    elif config.preset is Preset.TWILIO:
        _verify_twilio(secret, req, where)
    else:
        _verify_generic(config, secret, req, where, now)
    if replay is not None and replay.seen(request_nonce(config, req), now.timestamp()):
        raise WebhookReplayError(f"{where}: replayed request")


def source_allowed(config: HttpGatewayConfig, remote: str | None) -> bool:
    """Whether the peer is one of the gateway's ``allowed_sources``."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in ipaddress.ip_network(n, strict=False) for n in config.allowed_sources)


def _verify_twilio(secret: bytes, req: WebhookRequest, where: str) -> None:
    sig = _header(req, twilio.SIGNATURE_HEADER)
    if not sig:
        raise WebhookAuthError(f"{where}: missing {twilio.SIGNATURE_HEADER} header")
    params = _pairs(req.form) if req.method.upper() == "POST" else []
    body_hash = dict(_pairs(req.query)).get("bodySHA256")
    if body_hash is not None and not req.form:
        computed = hashlib.sha256(req.body).hexdigest()
        if not hmac.compare_digest(computed.encode(), body_hash.encode()):
            raise WebhookAuthError(f"{where}: body does not match bodySHA256")
        params = []
    ok = False
    for url in twilio.url_variants(req.url):
        ok |= hmac.compare_digest(twilio.signature(secret, url, params).encode(), sig.encode())
    if not ok:
        raise WebhookAuthError(f"{where}: bad {twilio.SIGNATURE_HEADER}")


def _verify_generic(
    config: HttpGatewayConfig, secret: bytes, req: WebhookRequest, where: str, now: datetime,
) -> None:
    value = _header(req, config.signature_header)
    if not value:
        raise WebhookAuthError(f"{where}: missing {config.signature_header} header")
    parsed = generic.parse_signature(value)
    if parsed is None:
        raise WebhookAuthError(f"{where}: malformed {config.signature_header} header")
    ts, v1 = parsed
    skew = abs(now.timestamp() - ts)
    if skew > config.signature_tolerance:
        raise WebhookAuthError(
            f"{where}: timestamp {skew:.0f}s away from now (tolerance "
            f"{config.signature_tolerance:.0f}s): stale or replayed")
    expected = generic.sign(secret, ts, req.body).split("v1=", 1)[1]
    if not hmac.compare_digest(v1.encode(), expected.encode()):
        raise WebhookAuthError(f"{where}: bad signature")


def request_nonce(config: HttpGatewayConfig, req: WebhookRequest) -> str:
    """What makes this request unique for replay detection, prefixed by the gateway name."""
    if config.preset is Preset.GENERIC:
        parsed = generic.parse_signature(_header(req, config.signature_header) or "")
        if parsed:
            return f"{config.name}:{parsed[1]}"
    if config.preset is Preset.TWILIO:
        # The signed MessageSid, not the unsigned idempotency header: a captured START
        # replayed with a fresh header is still the same message. A status callback comes
        # once per status for one sid.
        p = dict(_pairs(req.form)) if req.method.upper() == "POST" else dict(_pairs(req.query))
        sid = p.get("MessageSid") or p.get("SmsSid")
        if sid:
            return f"{config.name}:{sid}:{p.get('MessageStatus', p.get('SmsStatus', ''))}"
    return f"{config.name}:{_digest(req)}"


# -- parsing -----------------------------------------------------------------------------------


def parse_receipt(config: HttpGatewayConfig, req: WebhookRequest) -> Receipt:
    """The delivery report in an (already verified) receipt webhook."""
    where = f"{config.preset.value} receipt"
    p = _params(req)
    # The URL token authenticates; it has no place in the stored raw receipt.
    raw = (json.dumps({k: v for k, v in p.items() if k != "t"}, sort_keys=True, ensure_ascii=False)
           if config.preset is not Preset.GENERIC else req.body.decode("utf-8", "replace"))
    if config.preset is Preset.KANNEL:
        type_s = _field(p, "type", where)
        dlr_type = _number(type_s)
        if dlr_type is None:
            raise WebhookPayloadError(f"{where}: field 'type' is {type_s[:20]!r}, expected the DLR type number")
        answer = _opt(p, "answer") or ""
        fields = parse_receipt_fields(answer)
        return Receipt(
            gateway=config.name, state=kannel.receipt_state(dlr_type, fields.get("stat")),
            smsc_id=_opt(p, "fid") or fields.get("id"),
            message_id=_field(dict(_pairs(req.query)), "mid", where),
            error_code=fields.get("err"), done_at=_unix_time(_opt(p, "ts")), raw=raw,
        )
    if config.preset is Preset.JASMIN:
        status = _field(p, "message_status", where)
        return Receipt(
            gateway=config.name, state=jasmin.receipt_state(status), smsc_id=_field(p, "id", where),
            message_id=_opt(dict(_pairs(req.query)), "mid"), error_code=_opt(p, "err"),
            done_at=parse_receipt_date(_opt(p, "donedate")), raw=raw,
        )
    if config.preset is Preset.TWILIO:
        _check_account(config, p, where)
        status = _field(p, "MessageStatus", where).lower()
        return Receipt(
            gateway=config.name, state=twilio.STATUS_STATES.get(status, ReceiptState.UNKNOWN),
            smsc_id=_field(p, "MessageSid", where), message_id=_opt(p, "mid"),
            error_code=_opt(p, "ErrorCode"), done_at=parse_receipt_date(_opt(p, "RawDlrDoneDate")),
            raw=raw,
        )
    doc = _json_body(req, where)
    get = _generic_getter(config.receipt_fields, doc)
    status = get("status")
    if status is None:
        raise WebhookPayloadError(f"{where}: missing field {config.receipt_fields.get('status')!r}")
    status_map = {k.lower(): v for k, v in config.status_map.items()}
    mapped = status_map.get(status.lower())
    return Receipt(
        gateway=config.name, state=ReceiptState(mapped) if mapped else ReceiptState.UNKNOWN,
        smsc_id=get("smsc_id"), message_id=get("message_id") or _opt(p, "mid"),
        error_code=get("error_code"), done_at=None, raw=raw,
    )


def parse_inbound(config: HttpGatewayConfig, req: WebhookRequest, *, now: datetime) -> InboundSms:
    """The reply in an (already verified) inbound webhook."""
    where = f"{config.preset.value} inbound"
    p = _params(req)
    if config.preset is Preset.KANNEL:
        sender, recipient, text = _field(p, "from", where), _field(p, "to", where), p.get("text", "")
    elif config.preset is Preset.JASMIN:
        sender, recipient = _field(p, "from", where), _field(p, "to", where)
        binary = _opt(p, "binary")
        if p.get("coding") == jasmin.CODING_UCS2 and binary:
            try:
                text = decode_ucs2(bytes.fromhex(binary))
            except ValueError:
                raise WebhookPayloadError(f"{where}: field 'binary' is not hex") from None
        else:
            text = p.get("content", "")
    elif config.preset is Preset.TWILIO:
        _check_account(config, p, where)
        sender, recipient, text = _field(p, "From", where), _field(p, "To", where), p.get("Body", "")
    else:
        get = _generic_getter(config.inbound_fields, _json_body(req, where))
        values = {k: get(k) for k in ("sender", "recipient", "text")}
        for k in ("sender", "recipient"):
            if not values[k]:
                raise WebhookPayloadError(f"{where}: missing field {config.inbound_fields.get(k)!r}")
        sender, recipient, text = values["sender"] or "", values["recipient"] or "", values["text"] or ""
    # Signed presets prove the sender; Kannel's and Jasmin's bearer URL proves only that the
    # poster knows it, unless the peer is one the operator named.
    signed = config.preset in (Preset.TWILIO, Preset.GENERIC)
    authenticated = signed or (bool(config.allowed_sources) and source_allowed(config, req.remote))
    return InboundSms(gateway=config.name, sender=sender, recipient=recipient, text=text,
                      received_at=now, authenticated=authenticated)


def _check_account(config: HttpGatewayConfig, p: Mapping[str, str], where: str) -> None:
    sid = p.get("AccountSid")
    if sid is not None and config.account_sid and sid != config.account_sid:
        raise WebhookAuthError(f"{where}: AccountSid is not this gateway's account")


def _generic_getter(fields: Mapping[str, str], doc: Any) -> Any:
    def get(name: str) -> str | None:
        path = fields.get(name)
        if not path:
            return None
        v = generic.dig(doc, path)
        return None if generic.is_missing(v) or v is None else str(v)

    return get


def ack_for(config: HttpGatewayConfig, kind: Kind) -> Ack:
    """What the gateway must get back for a webhook it sent."""
    if config.preset is Preset.JASMIN:
        return Ack(200, jasmin.ACK, "text/plain")
    if config.preset is Preset.TWILIO:
        if kind is Kind.INBOUND:
            return Ack(200, twilio.EMPTY_TWIML, "text/xml")
        return Ack(200, "", "text/plain")
    if config.preset is Preset.GENERIC:
        return Ack(200, '{"ok":true}', "application/json")
    return Ack(200, "OK", "text/plain")


def handle(
    config: HttpGatewayConfig, kind: Kind, req: WebhookRequest, *, now: datetime,
    replay: ReplayCache | None,
) -> WebhookOutcome:
    """Verify, de-duplicate and parse one webhook (see the module docstring for the answers)."""
    verify(config, kind, req, now=now, replay=replay)
    nonce = request_nonce(config, req)
    try:
        if kind is Kind.RECEIPT:
            return WebhookOutcome(parse_receipt(config, req), None, ack_for(config, kind), nonce)
        return WebhookOutcome(None, parse_inbound(config, req, now=now), ack_for(config, kind), nonce)
    except WebhookPayloadError:
        if replay is not None:
            replay.discard(nonce)
        raise
