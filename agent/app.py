"""Composition root: builds every part of the agent, runs them in one TaskGroup, stops cleanly.

Data path: AMI reader -> bounded event queue -> tracker (pure) -> record pipeline (bounded;
agent.loop) -> rules (pure) -> dispatcher -> store (outbox) -> gateway. The AMI reader only
parses and enqueues and the tracker only hands finished records on; the pipeline is where
records wait for the store, and when it is full the wait reaches back to the AMI socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from agent.ami.agi import AgiServer
from agent.loop import watch
from agent.loop.recovery import spill_path
from agent.loop.watch import PbxWatch, watched_pbxes
from agent.dispatch import Dispatcher
from agent.dispatch.peers import PeerSends
from agent import retention
from agent.errors import ConfigError
from agent.gateways.build import agent_gateways
from agent.looplag import LagProbe
from agent.memory import HeapTrimmer
from agent.metrics import Metrics
from agent.loop import RecordPipeline, ReplyHandler
from agent.loop.pipeline import DEFAULT_CAPACITY
from agent.models import InboundSms, Receipt
from agent.rules.loader import load_rules
from agent.settings import Settings
from agent.web.recordings import recording_access
from agent.store import make_store
from agent.store.base import ReceiptOutcome

log = structlog.get_logger("aftercall.app")

ShutdownTrigger = Callable[[], Awaitable[None]]
#: At a stop, how long the events already read, the pending records and the outbox may take.
DRAIN_SECONDS = 5.0
#: AMI events read ahead of the tracker (about 300 calls) before the socket is not read.
AMI_BACKLOG = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AgentStats:
    reloads: int = 0
    reload_errors: int = 0
    started_at: datetime = field(default_factory=utcnow)


class AfterCallAgent:
    """The running agent. Tests build it with their own settings and a shutdown trigger."""

    def __init__(self, settings: Settings, *, dry_run: bool = False,
                 clock: Callable[[], datetime] = utcnow,
                 records_backlog: int = DEFAULT_CAPACITY, ami_backlog: int = AMI_BACKLOG) -> None:
        """``records_backlog``: call records waiting for the store before the tracker waits;
        ``ami_backlog``: AMI events waiting for the tracker before the socket is not read."""
        self.settings = settings
        self.dry_run = dry_run
        self.clock = clock
        self.rules = load_rules(settings.rules)
        # Signed recording links: the key (rules.yaml's, else this agent's own file) is
        # settled before any text is rendered.
        self.recordings = recording_access(self.rules.defaults, settings)
        self.stats = AgentStats()
        d = self.rules.defaults
        self.store = make_store(settings.db, owner=settings.agent_name or None)
        self.gateways = agent_gateways(self.rules.config.gateways, settings)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            self.store, self.gateways,
            backups={n: g.backup for n, g in self.rules.config.gateways.items() if g.backup},
            limits=d.limits(),
            dry_run=dry_run, clock=clock, metrics=self.metrics,
        )
        # Agents sharing PostgreSQL: the others' texts count in our rate limits and spend caps.
        others = getattr(self.store, "sends_by_others", None)
        self.peers = (PeerSends(others, self.dispatcher.count_others, clock)
                      if others is not None else None)
        # number -> the language it asked for by reply: read at start, kept by the replies
        self.languages: dict[str, str] = {}
        self.pipeline = RecordPipeline(self.store, self.dispatcher, self.metrics,
                                       rules=lambda: self.rules, clock=clock,
                                       capacity=records_backlog, languages=self.languages)
        # One watch per PBX (rules.yaml pbxes:, else the settings' one), all feeding the one
        # pipeline. The first keeps the records a stop could not store (they carry their PBX).
        links = watched_pbxes(settings, self.rules)
        shared = len(links) > 1 or "://" in str(settings.db)  # other PBXs' calls beside ours
        self.watches = [
            PbxWatch(name, ami, cdr_csv=cdr, rules=lambda: self.rules, pipeline=self.pipeline,
                     store=self.store, metrics=self.metrics, clock=clock,
                     ami_backlog=ami_backlog, spill_path=spill_path(settings.db) if i == 0 else None,
                     shared=shared)
            for i, (name, ami, cdr) in enumerate(links)]
        self._watched = self.rules.config.pbxes
        first = self.watches[0]
        # The one PBX's parts, by their old names (tests, the lab harness, benchmarks).
        self.tracker, self.ami, self.recovery = first.tracker, first.ami, first.recovery
        # Set once every PBX's first login is done (calls in progress adopted).
        self.ready = (first.recovery.ready if len(self.watches) == 1 else asyncio.Event())
        self.agi = AgiServer(self._attach, host=settings.agi_host, port=settings.agi_port,
                             wrapup=self._wrapup, pbx_of=self._pbx_at, sighted=self._sighted)
        # Read when /metrics is scraped, not set on every AMI event.
        self.metrics.on_scrape(self._scraped)
        self.loop_lag = LagProbe(self.metrics.loop_lag)
        # The C heap's free pages go back to the system while the agent runs (agent.memory:
        # without it a soak's RSS rose ~0.13 MB/min in the C heap alone, nothing live growing).
        self.heap_trimmer = HeapTrimmer()
        self.replies = ReplyHandler(self.store, self.rules, self.dispatcher.submit_now, clock=clock,
                                    metrics=self.metrics, languages=self.languages)
        self.http_port: int | None = None
        self.web_deps: Any = None  # the dashboard's WebDeps, once the HTTP server runs

    # -- what the parts call --------------------------------------------------------------------

    async def handle_event(self, event: Any) -> None:
        """An AMI event of the first (or only) PBX: what tests and benchmarks feed."""
        await self.watches[0].handle_event(event)

    async def _pbx_at(self, address: str | None) -> str | None:
        if len(self.watches) < 2:
            return None
        return await watch.pbx_at(((w.name, w.ami.config.host) for w in self.watches), address)

    def _attach(self, uniqueid: str, channel: str, tags: tuple[str, ...],
                variables: Any, pbx: str | None = None) -> bool:
        return watch.attach(self.watches, uniqueid, channel, tags, variables, pbx)

    async def _sighted(self, uniqueid: str, pbx: str | None) -> bool:
        return await watch.sighted(self.watches, uniqueid, pbx)

    async def _wrapup(self, code: str, call_id: str | None, agent: str | None,
                      channel: str, pbx: str | None = None) -> bool:
        """The AGI ``disposition`` hook: onto the call if a PBX still has it up, else to the
        calls waiting for their code."""
        got = watch.wrapup_code(self.watches, code, call_id, agent, channel, pbx)
        return got if isinstance(got, bool) else await self.pipeline.wrapups.code(got)

    def _scraped(self) -> None:
        for w in self.watches:
            w.scraped(self.metrics)
        self.metrics.records(self.pipeline.pending, self.pipeline.oldest_age(),
                             self.pipeline.wrapups.held)
        t = self.heap_trimmer
        self.metrics.heap_trims(t.runs, t.cpu_s, t.longest_s)

    async def _on_gateway_receipt(self, receipt: Receipt) -> ReceiptOutcome:
        """SMPP receipts (HTTP ones are counted by the webhook that took them)."""
        outcome = await self.dispatcher.on_receipt(receipt)
        self.metrics.receipt(receipt.state)
        return outcome

    async def _on_inbound(self, sms: InboundSms) -> None:
        await self.replies.handle(sms)

    def reload_rules(self) -> bool:
        try:
            new = load_rules(self.settings.rules)
            recordings = recording_access(new.defaults, self.settings)
        except (ConfigError, OSError) as e:
            self.stats.reload_errors += 1
            log.error("rules_reload_refused", error=str(e), kept="previous rules")
            return False
        if new.config.pbxes != self._watched:
            log.warning("pbxes_change_ignored", fix="restart the agent to watch the PBXs "
                        "rules.yaml now names", watching=[w.name for w in self.watches])
        self.rules = new
        self.recordings = recordings
        self.replies.rules = new
        self.dispatcher.limits = new.defaults.limits()
        # The PBXs watched are kept (a changed pbxes: takes a restart), their reading not.
        for w in self.watches:
            w.rules_changed(new)
        if self.web_deps is not None:
            from agent.web.serve import rules_reloaded

            rules_reloaded(self.web_deps, new.defaults, recordings)
        self.stats.reloads += 1
        log.info("rules_reloaded", rules=len(new.rules))
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    def _health_checks(self) -> dict[str, Any]:
        from agent.web.deps import health_checks

        checks: dict[str, Any] = dict(health_checks([w.health for w in self.watches],
                                                    self.gateways, self.store, self.pipeline))
        checks["event_loop"] = self.loop_lag.health
        return checks

    async def _start_web(self) -> Any:
        from agent.web.serve import start_web  # aiohttp's app only when the agent serves

        runner, self.web_deps, self.http_port = await start_web(
            self.settings, self.rules.defaults, store=self.store, metrics=self.metrics,
            gateways=self.gateways, on_receipt=self.dispatcher.on_receipt,
            on_inbound=self._on_inbound, health=self._health_checks(), clock=self.clock,
            recordings=self.recordings)
        return runner

    async def open_store(self) -> None:
        """Open the store and read what the record path keeps in memory from it."""
        await self.store.open()
        try:
            hold = getattr(self.store, "hold_name", None)  # agents sharing PostgreSQL
            if hold is not None:
                await hold()
            self.languages.update(await self.store.language_preferences())
        except BaseException:
            await self.store.close()
            raise

    async def run(self, shutdown_trigger: ShutdownTrigger) -> None:
        await self.open_store()
        runner = None
        self.heap_trimmer.start()
        try:
            for gw in self.gateways.values():
                await gw.start(self._on_gateway_receipt, self._on_inbound)
            await self.agi.start()
            runner = await self._start_web()
            async with asyncio.TaskGroup() as tg:
                # A failed AMI link (a refused login: exit 3) ends the run through the same
                # orderly stop as a signal, not by aborting the TaskGroup mid-way, which left
                # the store's thread alive (the process never exited).
                # One PBX's refused login ends the run (a wrong secret is not retried); a
                # link that drops reconnects on its own while the others carry on.
                ami = tg.create_task(watch.run_links(self.watches, self.ready), name="ami")
                stop = tg.create_task(shutdown_trigger(), name="shutdown")
                tasks = [
                    tg.create_task(self.dispatcher.run(), name="dispatcher"),
                    *(tg.create_task(w.ami.consume(w.handle_event), name=f"tracker-{w.name}")
                      for w in self.watches),
                    *(tg.create_task(w.endpoints.run(w.ami), name=f"endpoints-{w.name}")
                      for w in self.watches),
                    tg.create_task(self.pipeline.run(), name="records"),
                    tg.create_task(watch.evict_stale(self.watches, self.clock), name="evict"),
                    tg.create_task(self.recovery.resume_spilled(), name="resume-records"),
                    tg.create_task(self.loop_lag.run(), name="loop-lag"),
                ]
                if self.peers is not None:
                    tasks.append(tg.create_task(self.peers.run(), name="peer-sends"))
                fold = getattr(self.store, "keep_folding", None)  # PostgreSQL's rollups
                if fold is not None:
                    tasks.append(tg.create_task(fold(), name="report-rollups"))
                if isinstance(self.store, retention.RetentionStore):
                    tasks.append(tg.create_task(
                        retention.run(self.store, lambda: self.rules.config.retention,
                                      self.clock), name="retention"))
                done, _ = await asyncio.wait({ami, stop}, return_when=asyncio.FIRST_COMPLETED)
                failure = ami.result() if ami in done else None
                log.info("agent_stopping")
                await self._drain()
                for t in (*tasks, ami, stop):
                    t.cancel()
            if failure is not None:
                raise failure
        finally:
            await asyncio.to_thread(self.heap_trimmer.stop)
            for w in self.watches:
                await w.recovery.close()
            if runner is not None:
                await runner.cleanup()
            await self.agi.close()
            for gw in self.gateways.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(gw.close(), DRAIN_SECONDS)
            await self.store.close()

    async def _drain(self) -> None:
        """Stop reading AMI, then let what was already read become records, the records become
        rows and the due rows reach the gateway, each within ``DRAIN_SECONDS``. What is left is
        logged; records are kept for the next start, rows stay queued in the outbox."""
        loop = asyncio.get_running_loop()
        end = loop.time() + DRAIN_SECONDS
        await watch.stop_reading(self.watches, end)
        left = await self.pipeline.drain(max(0.0, end - loop.time()))
        await self.recovery.keep_unfinished(left)
        await self.dispatcher.settle(DRAIN_SECONDS)
        await self.dispatcher.stop(timeout=DRAIN_SECONDS)
