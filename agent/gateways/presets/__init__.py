"""HTTP gateway presets: per gateway, the send request and its answer, and its webhooks (check, read)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from agent.gateways.presets import generic, jasmin, kannel, twilio
from agent.gateways.presets.callbacks import Ack, Kind, WebhookRequest
from agent.gateways.presets.common import HttpGatewayConfig, HttpRequest, Preset
from agent.models import OutboundSms, Receipt


class PresetModule(Protocol):
    """What each preset module provides: its send request and answer, and its webhooks'
    signature check, replay nonce, parsing and acknowledgement (used by gateways.webhooks)."""

    SIGNED: bool  # its webhooks prove who sent them (else a URL token is all there is)

    def build_submit(self, cfg: HttpGatewayConfig, sms: OutboundSms) -> HttpRequest: ...

    def parse_submit(
        self, cfg: HttpGatewayConfig, status: int, headers: Mapping[str, str], body: bytes
    ) -> str | None: ...

    def verify_webhook(self, cfg: HttpGatewayConfig, kind: Kind, req: WebhookRequest,
                       where: str, secret: bytes, now: datetime) -> None: ...

    def webhook_nonce(self, cfg: HttpGatewayConfig, req: WebhookRequest) -> str | None: ...

    def parse_receipt(self, cfg: HttpGatewayConfig, req: WebhookRequest, where: str
                      ) -> Receipt: ...

    def parse_inbound(self, cfg: HttpGatewayConfig, req: WebhookRequest, where: str
                      ) -> tuple[str, str, str]: ...

    def ack(self, kind: Kind) -> Ack: ...


PRESETS: Mapping[Preset, PresetModule] = {
    Preset.KANNEL: kannel,
    Preset.JASMIN: jasmin,
    Preset.TWILIO: twilio,
    Preset.GENERIC: generic,
}

__all__ = ["PRESETS", "HttpGatewayConfig", "HttpRequest", "Preset", "PresetModule"]
