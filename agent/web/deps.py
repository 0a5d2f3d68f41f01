"""What the web layer is given (WebDeps), and how the running agent's parts provide it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.gateways.presets.common import HttpGatewayConfig
from agent.gateways.webhooks import ReplayCache
from agent.metrics import Metrics
from agent.models import InboundSms, Receipt
from agent.store.seams import Lifecycle, Store
from agent.web import guard

if TYPE_CHECKING:
    from agent.gateways.base import Gateway
    from agent.loop.pipeline import RecordPipeline

HealthCheck = Callable[[], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]
#: /healthz reports the record pipeline down when its oldest record has waited longer.
RECORDS_BEHIND_S = 10.0
MAX_BODY = 64 * 1024  # webhooks are a few hundred bytes; anything near this is not a gateway


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WebDeps:
    """Everything the web layer needs, built by the composition root (agent/app.py)."""

    #: The agent's whole store, as the composition root passes it. Routes read it only through
    #: accessors typed as the seam each uses (agent.store.seams); reports, through
    #: ``report_source``.
    store: Store
    metrics: Metrics
    on_receipt: Callable[[Receipt], Awaitable[object]]  # Dispatcher.on_receipt
    on_inbound: Callable[[InboundSms], Awaitable[object]]  # ReplyHandler.handle
    webhooks: Mapping[str, HttpGatewayConfig] = field(default_factory=dict)  # HTTP gateways
    # name -> probe returning {"ok": bool, ...details}; e.g. "ami", "gateways", "store"
    health: Mapping[str, HealthCheck] = field(default_factory=dict)
    dashboard_token: str | None = None
    bound_to_loopback: bool = True
    metrics_public: bool = False  # let Prometheus scrape without the token
    clock: Callable[[], datetime] = _utcnow
    price_per_segment: Decimal | None = None
    currency: str | None = None
    timezone: str = "UTC"  # rules.yaml defaults.timezone: the dashboard shows times in it
    region: str | None = None  # rules.yaml defaults.region: national numbers typed in searches
    replay: ReplayCache = field(default_factory=ReplayCache)
    max_body: int = MAX_BODY
    public_url: str | None = None  # set: the agent is published, the token is required
    allowed_hosts: frozenset[str] = frozenset()  # Host names beyond loopback and public_url
    session_ttl: float = guard.SESSION_TTL
    limiter: guard.RateLimiter = field(default_factory=guard.RateLimiter)
    #: Signed recording links (agent.web.recordings.RecordingAccess); None: not configured.
    recordings: Any = None


#: How handlers find the WebDeps of their application.
DEPS: web.AppKey[WebDeps] = web.AppKey("deps")


def store_health(store: Lifecycle) -> HealthCheck:
    """A ``health`` probe for the store: a tiny real write (``Store.health``)."""

    async def probe() -> Mapping[str, Any]:
        ok = await store.health()
        return {"ok": ok} if ok else {"ok": False, "error": store.last_error or "write failed"}

    return probe


def health_checks(pbxes: Sequence[Callable[[], Mapping[str, Any]]],
                  gateways: Mapping[str, Gateway], store: Lifecycle,
                  pipeline: RecordPipeline) -> dict[str, HealthCheck]:
    """/healthz's probes over the running agent's parts. ``pbxes``: one probe per watched
    PBX's AMI link (``PbxWatch.health``)."""

    def ami_health() -> dict[str, Any]:
        links = [dict(probe()) for probe in pbxes]
        if len(links) == 1:  # one PBX: its link's figures, as they always were
            return links[0]
        # Several: down when any link is down (that PBX's calls wait for its CDR), each named.
        return {"ok": all(link["ok"] for link in links),
                "pbxes": {link["pbx"]: link for link in links}}

    def gateways_health() -> dict[str, Any]:
        states = {n: bool(g.healthy) for n, g in gateways.items()}
        return {"ok": any(states.values()), **states}

    store_probe = store_health(store)

    async def store_check() -> dict[str, Any]:
        out = dict(await store_probe())
        if pipeline.store_failing:
            out.update(ok=False, unrecorded_calls=pipeline.pending)
        return out

    def records_check() -> dict[str, Any]:
        # A backlog is not an outage, but past this age texts are late enough to say so.
        age = pipeline.oldest_age()
        return {"ok": age <= RECORDS_BEHIND_S, "pending": pipeline.pending,
                "oldest_age_s": round(age, 3), "budget_s": RECORDS_BEHIND_S}

    return {"ami": ami_health, "gateways": gateways_health, "store": store_check,
            "records": records_check}
