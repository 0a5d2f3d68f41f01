"""The agent's HTTP server: what the web layer is given from the running agent, served on the
configured address, and what a rules reload changes in it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from agent.gateways.base import Gateway
from agent.gateways.http import HttpGateway
from agent.models import InboundSms, Receipt
from agent.rules.defaults import Defaults
from agent.settings import Settings, is_loopback
from agent.store.seams import Store
from agent.web.app import make_app
from agent.web.deps import HealthCheck, WebDeps
from agent.web.guard import GuardedRunner

log = structlog.get_logger("aftercall.app")


async def start_web(settings: Settings, defaults: Defaults, *, store: Store, metrics: Any,
                    gateways: Mapping[str, Gateway],
                    on_receipt: Callable[[Receipt], Awaitable[object]],
                    on_inbound: Callable[[InboundSms], Awaitable[object]],
                    health: Mapping[str, HealthCheck], clock: Callable[[], datetime],
                    recordings: Any) -> tuple[GuardedRunner, WebDeps, int]:
    """Serve the webhooks, links, API, dashboard, /metrics and /healthz; returns the runner
    (cleaned up at the stop), the WebDeps a reload updates, and the bound port."""
    deps = WebDeps(
        store=store, metrics=metrics, on_receipt=on_receipt, on_inbound=on_inbound,
        webhooks={n: g.config for n, g in gateways.items() if isinstance(g, HttpGateway)},
        health=health, dashboard_token=settings.dashboard_token,
        bound_to_loopback=is_loopback(settings.http_host), clock=clock,
        price_per_segment=defaults.price_per_segment, currency=defaults.currency,
        timezone=defaults.timezone, region=defaults.region, public_url=settings.public_url,
        recordings=recordings,
    )
    runner = GuardedRunner(make_app(deps), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    port = int(runner.addresses[0][1])
    log.info("http_listening", host=settings.http_host, port=port)
    return runner, deps, port


def rules_reloaded(deps: WebDeps, defaults: Defaults, recordings: Any) -> None:
    """The dashboard's zone, search region, prices and recording links follow rules.yaml."""
    deps.timezone, deps.region = defaults.timezone, defaults.region
    deps.price_per_segment, deps.currency = defaults.price_per_segment, defaults.currency
    deps.recordings = recordings
