"""The running gateways, built from rules.yaml's validated gateway models (the one place that
knows the concrete driver classes)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from agent.errors import ConfigError
from agent.gateways.base import Gateway
from agent.gateways.config import HttpConfig, SmppConfig
from agent.settings import Settings, read_secret_file
from agent.store import is_postgres_url


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


def agent_gateways(
    configs: Mapping[str, SmppConfig | HttpConfig], settings: Settings,
) -> dict[str, Gateway]:
    """The gateways rules.yaml configures, with this agent's callback URL and secret."""
    public = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    return build_gateways(configs, callback_base=public.rstrip("/"),
                          webhook_secret=lambda: webhook_secret(settings))


def webhook_secret(settings: Settings) -> str:
    """The secret that signs callback URLs for presets without their own signature. Kept next to
    the database so callback tokens issued before a restart still verify after it."""
    if settings.webhook_secret:
        return settings.webhook_secret
    if is_postgres_url(settings.db):
        # Agents sharing a database must sign callbacks alike: a receipt URL issued by one
        # may reach another. There is no file beside a URL to keep it in.
        raise ConfigError(
            "with a PostgreSQL database, set AFTERCALL_WEBHOOK_SECRET (the same for every agent "
            "sharing it) or a webhook_secret on each HTTP gateway in rules.yaml")
    path = Path(f"{settings.db}.webhook-secret")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    # Whoever could write this file could forge every receipt and reply: trust it only when
    # it is this user's and nobody else's to read.
    return read_secret_file(path, "webhook secret file", strict=True)
