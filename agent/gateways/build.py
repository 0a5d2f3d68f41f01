"""The running gateways, built from rules.yaml's validated gateway models (the one place that
knows the concrete driver classes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent.gateways.base import Gateway
from agent.gateways.config import HttpConfig, SmppConfig


def build_gateways(
    configs: Mapping[str, SmppConfig | HttpConfig], *, callback_base: str,
    webhook_secret: Callable[[], str],
) -> dict[str, Gateway]:
    """One driver per configured gateway. HTTP gateways get their callbacks at
    ``callback_base`` (the agent's public URL) signed with ``webhook_secret()`` unless
    rules.yaml gives them their own (it is asked for only when some gateway needs it)."""
    from agent.gateways.http import HttpGateway
    from agent.gateways.smpp.client import SmppGateway

    out: dict[str, Gateway] = {}
    for name, cfg in configs.items():
        if isinstance(cfg, SmppConfig):
            out[name] = SmppGateway.from_config(name, cfg)
        else:
            out[name] = HttpGateway(cfg.bound(name, callback_base, webhook_secret))
    return out
