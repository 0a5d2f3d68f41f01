"""The gateways section of rules.yaml: one model per gateway kind, each owned by its driver.

``aftercall check`` validates rules.yaml against these models and ``aftercall run`` builds
the gateways from the very same objects (``agent.gateways.build``), so a gateway that passes
the check always starts, and every key is either used or refused with its file:line.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from agent.gateways.presets.common import HttpGatewayConfig as HttpConfig
from agent.gateways.smpp.config import SmppConfig

GatewayConfig = Annotated[SmppConfig | HttpConfig, Field(discriminator="type")]

__all__ = ["GatewayConfig", "HttpConfig", "SmppConfig"]
