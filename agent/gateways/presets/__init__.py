"""HTTP gateway presets: each module turns an OutboundSms into its gateway's request and reads the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agent.gateways.presets import generic, jasmin, kannel, twilio
from agent.gateways.presets.common import HttpGatewayConfig, HttpRequest, Preset
from agent.models import OutboundSms


class PresetModule(Protocol):
    def build_submit(self, cfg: HttpGatewayConfig, sms: OutboundSms) -> HttpRequest: ...

    def parse_submit(
        self, cfg: HttpGatewayConfig, status: int, headers: Mapping[str, str], body: bytes
    ) -> str | None: ...


PRESETS: Mapping[Preset, PresetModule] = {
    Preset.KANNEL: kannel,
    Preset.JASMIN: jasmin,
    Preset.TWILIO: twilio,
    Preset.GENERIC: generic,
}

__all__ = ["PRESETS", "HttpGatewayConfig", "HttpRequest", "Preset", "PresetModule"]
