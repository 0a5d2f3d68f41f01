"""Receipt and reply webhooks of HTTP gateways: the generic flow (peer check, verify, de-duplicate,
parse) around each preset module's own signature check and parsing (pure, no I/O).

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

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from agent.gateways.presets import PRESETS
from agent.gateways.presets.callbacks import (
    Ack,
    Kind,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookRequest,
    digest,
    source_allowed,
)
from agent.gateways.presets.common import HttpGatewayConfig
from agent.models import InboundSms, Receipt

__all__ = [
    "Ack", "Kind", "ReplayCache", "WebhookAuthError", "WebhookOutcome", "WebhookPayloadError",
    "WebhookReplayError", "WebhookRequest", "ack_for", "handle", "parse_inbound", "parse_receipt",
    "request_nonce", "source_allowed", "verify",
]


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
    PRESETS[config.preset].verify_webhook(config, kind, req, where, secret, now)
    if replay is not None and replay.seen(request_nonce(config, req), now.timestamp()):
        raise WebhookReplayError(f"{where}: replayed request")


def request_nonce(config: HttpGatewayConfig, req: WebhookRequest) -> str:
    """What makes this request unique for replay detection, prefixed by the gateway name: the
    preset's own nonce when it has one, else a digest of the whole request."""
    return (PRESETS[config.preset].webhook_nonce(config, req)
            or f"{config.name}:{digest(req)}")


def parse_receipt(config: HttpGatewayConfig, req: WebhookRequest) -> Receipt:
    """The delivery report in an (already verified) receipt webhook."""
    return PRESETS[config.preset].parse_receipt(config, req, f"{config.preset.value} receipt")


def parse_inbound(config: HttpGatewayConfig, req: WebhookRequest, *, now: datetime) -> InboundSms:
    """The reply in an (already verified) inbound webhook."""
    preset = PRESETS[config.preset]
    sender, recipient, text = preset.parse_inbound(config, req, f"{config.preset.value} inbound")
    # Signed presets prove the sender; Kannel's and Jasmin's bearer URL proves only that the
    # poster knows it, unless the peer is one the operator named.
    authenticated = preset.SIGNED or (bool(config.allowed_sources)
                                      and source_allowed(config, req.remote))
    return InboundSms(gateway=config.name, sender=sender, recipient=recipient, text=text,
                      received_at=now, authenticated=authenticated)


def ack_for(config: HttpGatewayConfig, kind: Kind) -> Ack:
    """What the gateway must get back for a webhook it sent."""
    return PRESETS[config.preset].ack(kind)


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
    except (WebhookPayloadError, WebhookAuthError):  # e.g. a body that contradicts its URL
        if replay is not None:
            replay.discard(nonce)
        raise
