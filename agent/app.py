"""Composition root: builds every part of the agent, runs them in one TaskGroup, stops cleanly.

Data path: AMI reader -> bounded event queue -> tracker (pure) -> bounded record queue ->
record worker: rules (pure), dispatcher -> store (outbox) -> gateway. Neither the AMI reader
nor the tracker waits for disk or network: the reader only parses and enqueues, the tracker
only hands finished records on; the record worker is the one that waits for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from agent.ami.agi import AgiServer
from agent.ami.client import AmiClient, config_from_settings
from agent.backoff import backoff_delay
from agent.calls.replay import agents_directory
from agent.calls.tracker import CallTracker
from agent.dispatch import Dispatcher
from agent.errors import AftercallError, ConfigError, StoreError
from agent.gateways.base import Gateway
from agent.gateways.build import build_gateways as gateways_from_config
from agent.metrics import Metrics
from agent.models import CallRecord, InboundSms, Receipt, Trigger
from agent.reconcile import reconcile
from agent.replies import ReplyHandler
from agent.rules.engine import explain, rule_outcomes
from agent.rules.loader import RuleSet, load_rules
from agent.settings import Settings, is_loopback
from agent.sms.links import make_sync_link_factory
from agent.store.base import ReceiptOutcome
from agent.store import is_postgres_url, make_store

log = structlog.get_logger("aftercall.app")

ShutdownTrigger = Callable[[], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def build_gateways(rules: RuleSet, settings: Settings) -> dict[str, Gateway]:
    """The gateways rules.yaml configures, with this agent's callback URL and secret."""
    public = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    return gateways_from_config(rules.config.gateways, callback_base=public.rstrip("/"),
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
    return path.read_text().strip()


@dataclass
class AgentStats:
    records: int = 0
    decisions: int = 0
    reloads: int = 0
    reload_errors: int = 0
    started_at: datetime = field(default_factory=utcnow)


class AfterCallAgent:
    """The running agent. Tests build it with their own settings and a shutdown trigger."""

    def __init__(self, settings: Settings, *, dry_run: bool = False,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.clock = clock
        self.rules = load_rules(settings.rules)
        self.stats = AgentStats()
        d = self.rules.defaults
        self.tracker = CallTracker(agents=agents_directory(self.rules), region=d.region)
        self.store = make_store(settings.db, owner=settings.agent_name or None)
        self.gateways = build_gateways(self.rules, settings)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            self.store, self.gateways,
            backups={n: g.backup for n, g in self.rules.config.gateways.items() if g.backup},
            limits=d.limits(),
            dry_run=dry_run, clock=clock, metrics=self.metrics,
        )
        self.ami = AmiClient(config_from_settings(settings), on_login=self._on_login)
        self.agi = AgiServer(self._attach, host=settings.agi_host, port=settings.agi_port)
        # Read when /metrics is scraped, not set on every AMI event.
        self.metrics.on_scrape(self._ami_metrics)
        self.replies = ReplyHandler(self.store, self.rules, self.dispatcher.submit_now, clock=clock,
                                    metrics=self.metrics)
        self.http_port: int | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()
        self.records: deque[CallRecord] = deque(maxlen=1000)  # recent records, for tests
        # Records on their way to the rules and the store (see handle_record); bounded.
        self._unrecorded: deque[CallRecord] = deque(maxlen=10_000)
        self._unrecorded_waiting = asyncio.Event()
        self._store_failing = False

    # -- the call path ------------------------------------------------------------------------

    async def handle_event(self, event: Any) -> None:
        for record in self.tracker.feed(event):
            await self.handle_record(record)

    async def handle_record(self, record: CallRecord) -> None:
        """Queue one call record for the rules. Never waits: the tracker task (and the AMI
        queue behind it) must not wait for disk. ``_record_worker`` applies the rules in
        order; while the store cannot record (disk full, database locked) nothing is sent and
        the records wait here, retried until the store takes them (the rules run again then,
        so max_age still holds)."""
        self.stats.records += 1
        self.records.append(record)
        if len(self._unrecorded) == self._unrecorded.maxlen:
            lost = self._unrecorded.popleft()
            # Not marked handled in the store: the CDR reconciliation after the next login
            # still finds it (within max_age) when a CDR file is configured.
            log.error("call_unrecorded_dropped", call_id=lost.call_id,
                      pending=len(self._unrecorded))
        self._unrecorded.append(record)
        if self._store_failing:
            self.metrics.unrecorded(len(self._unrecorded))
        self._unrecorded_waiting.set()

    async def _record_worker(self) -> None:
        """The one place call records meet the store: oldest first, one at a time (a cooldown
        reads the store before it writes). While the store refuses, wait longer between
        tries (agent.backoff) and keep the alarm up."""
        failures = 0
        while True:
            await self._unrecorded_waiting.wait()
            while self._unrecorded:
                if failures:
                    await asyncio.sleep(backoff_delay(failures - 1, 0.5, 10.0))
                record = self._unrecorded[0]
                try:
                    await self._apply_rules(record)
                except StoreError as e:
                    failures += 1
                    self._store_failing = True
                    self.metrics.unrecorded(len(self._unrecorded))
                    log.error("call_unrecorded", call_id=record.call_id, error=str(e),
                              pending=len(self._unrecorded), failures=failures)
                    continue
                except Exception:  # one bad record must not stop the others
                    log.exception("call_record_failed", call_id=record.call_id)
                self._unrecorded.popleft()
                if failures:
                    log.info("call_recorded_late", call_id=record.call_id,
                             pending=len(self._unrecorded))
                    failures = 0
                if self._store_failing:
                    self.metrics.unrecorded(len(self._unrecorded))
            if self._store_failing:
                self._store_failing = False
                self.metrics.store_health(True)
            self._unrecorded_waiting.clear()

    async def _apply_rules(self, record: CallRecord) -> None:
        """Rules -> rows (and the call record with them) -> counted. Raises StoreError before
        anything is counted, so a retried record is counted once."""
        base = self.rules.defaults.public_base_url
        links = make_sync_link_factory(base) if base else None
        now = self.clock()
        traces = explain(self.rules, record, now=now, link=links)
        decisions = [d for t in traces for d in t.decisions]
        log.info(str(record.trigger), call_id=record.call_id, disposition=str(record.disposition),
                 queue=record.queue, caller=record.caller, decisions=len(decisions))
        codes = [code for code, _ in links.pending] if links else []
        if codes:
            # The short link must resolve before the text can reach a handset.
            await links.persist(self.store, message_id=None)  # type: ignore[union-attr]
        completed = record.trigger is Trigger.CALL_COMPLETED
        rows = []
        if decisions or completed:  # a completed call is kept even when no rule matched
            rows = await self.dispatcher.handle(decisions, call=record)
        # After the rows: the outcomes' commit then runs beside the submit, not before it.
        await self.store.record_rule_outcomes(
            record.call_id, record.trigger, rule_outcomes(self.rules, record.trigger, traces),
            now=now)
        sent = [r for r in rows if r.text and any(c in r.text for c in codes)]
        if sent:
            await self.store.link_to_message(codes, sent[0].id)
        self.stats.decisions += len(decisions)
        for d in decisions:
            self.metrics.rule_matched(d.rule)
        for row in rows:
            self.metrics.message_state(str(row.state), row.reason)
        if completed:
            self.metrics.call_completed(record)

    def _attach(self, uniqueid: str, channel: str, tags: tuple[str, ...],
                variables: Any) -> bool:
        return self.tracker.attach(uniqueid or channel, tags=tags, vars=dict(variables))

    async def _on_login(self, client: AmiClient) -> None:
        """After every (re)login: adopt calls in progress, finish those that ended meanwhile,
        and recover from Asterisk's CDR the calls that ended while we were away."""
        if client.stats.logins > 1:
            self.metrics.ami_reconnected()
        channels = await client.core_show_channels()
        ended_unseen = self.tracker.resync(channels, now_ts=self.clock().timestamp())
        if self.settings.cdr_csv is None:
            for record in ended_unseen:
                await self.handle_record(record)
        else:
            # Those calls ended while the link was down: their records guess at how (the
            # Hangup, the abandon, the talk time were not seen). Asterisk's CDR knows, so the
            # reconciliation handles them, and the guess serves only a call the CDR lacks.
            gap = client.stats.disconnected_at
            since = datetime.fromtimestamp(gap, UTC) if gap is not None else None
            task = asyncio.create_task(self.reconcile_gap(since, fallback=ended_unseen),
                                       name="cdr-reconcile")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.ready.set()

    async def reconcile_gap(self, gap_start: datetime | None = None,
                            fallback: list[CallRecord] | None = None) -> Any:
        """Calls in the CDR that ended while the agent was away and that the store does not
        know go through the rules now. "Away" starts when the AMI connection was lost; after a
        restart, when the newest call in the store ended. A store that never ran starts from
        now: calls from before aftercall was installed are nobody's after-call SMS."""
        now = self.clock()
        max_age = self.rules.defaults.max_age or timedelta(minutes=15)
        last = gap_start or await self.store.newest_call_end()
        # CDR times are whole seconds: step back a little so the boundary call is not missed
        # (the store's idempotency makes seeing it twice harmless).
        since = last - timedelta(seconds=2) if last else now
        result = await reconcile(
            cdr_path=self.settings.cdr_csv, store=self.store,  # type: ignore[arg-type]
            handle_record=self.handle_record, since=since, now=now, max_age=max_age,
            region=self.rules.defaults.region, agents=agents_directory(self.rules),
            in_progress=self.tracker._by_lid, fallback=fallback or (),
        )
        return result

    def _ami_metrics(self) -> None:
        self.metrics.ami_queue(self.ami.queue.qsize())
        self.metrics.ami_dropped_total(self.ami.stats.dropped)

    async def _on_gateway_receipt(self, receipt: Receipt) -> ReceiptOutcome:
        """SMPP receipts (HTTP ones are counted by the webhook that took them)."""
        outcome = await self.dispatcher.on_receipt(receipt)
        self.metrics.receipt(receipt.state)
        return outcome

    async def _on_inbound(self, sms: InboundSms) -> None:
        await self.replies.handle(sms)

    # -- rules reload ---------------------------------------------------------------------------

    def reload_rules(self) -> bool:
        try:
            new = load_rules(self.settings.rules)
        except (ConfigError, OSError) as e:
            self.stats.reload_errors += 1
            log.error("rules_reload_refused", error=str(e), kept="previous rules")
            return False
        self.rules = new
        self.replies.rules = new
        self.dispatcher.limits = new.defaults.limits()
        # The tracker names agents (and reads national numbers) for records still to come.
        self.tracker.agents = agents_directory(new)
        self.tracker.region = new.defaults.region
        self.stats.reloads += 1
        log.info("rules_reloaded", rules=len(new.rules))
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    async def _evict_stale(self) -> None:
        while True:
            await asyncio.sleep(60)
            for call_id in self.tracker.evict_stale(self.clock().timestamp()):
                log.warning("call_evicted_stale", call_id=call_id)
            # The tracker never raises on odd input; it counts it. Say what it counted.
            if self.tracker.warnings:
                log.warning("ami_input_odd", **dict(self.tracker.warnings))
                self.tracker.warnings.clear()

    def _web_deps(self) -> Any:
        from agent.gateways.http import HttpGateway
        from agent.web.app import WebDeps, store_health

        def ami_health() -> dict[str, Any]:
            st = self.ami.stats
            return {"ok": st.connected, "reconnects": st.reconnects, "dropped": st.dropped,
                    "queue_depth": self.ami.queue.qsize(),
                    # least privilege: actions the AMI user could run that aftercall never does
                    "excess_write_actions": list(st.excess_write)}

        def gateways_health() -> dict[str, Any]:
            states = {n: bool(g.healthy) for n, g in self.gateways.items()}
            return {"ok": any(states.values()), **states}

        store_probe = store_health(self.store)

        async def store_check() -> dict[str, Any]:
            out = dict(await store_probe())
            if self._store_failing:
                out.update(ok=False, unrecorded_calls=len(self._unrecorded))
            return out

        d = self.rules.defaults
        return WebDeps(
            store=self.store, metrics=self.metrics, on_receipt=self.dispatcher.on_receipt,
            on_inbound=self._on_inbound,
            webhooks={n: g.config for n, g in self.gateways.items() if isinstance(g, HttpGateway)},
            health={"ami": ami_health, "gateways": gateways_health,
                    "store": store_check},
            dashboard_token=self.settings.dashboard_token,
            bound_to_loopback=is_loopback(self.settings.http_host),
            clock=self.clock, price_per_segment=d.price_per_segment, currency=d.currency,
            timezone=d.timezone, region=d.region, public_url=self.settings.public_url,
        )

    async def _start_web(self) -> Any:
        from aiohttp import web

        from agent.web.app import make_app
        from agent.web.guard import GuardedRunner

        runner = GuardedRunner(make_app(self._web_deps()), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        self.http_port = runner.addresses[0][1]
        log.info("http_listening", host=self.settings.http_host, port=self.http_port)
        return runner

    async def run(self, shutdown_trigger: ShutdownTrigger) -> None:
        await self.store.open()
        try:
            for gw in self.gateways.values():
                await gw.start(self._on_gateway_receipt, self._on_inbound)
            await self.agi.start()
            runner = await self._start_web()
            async with asyncio.TaskGroup() as tg:
                dispatcher = tg.create_task(self.dispatcher.run(), name="dispatcher")
                ami = tg.create_task(self.ami.run(), name="ami")
                consumer = tg.create_task(self.ami.consume(self.handle_event), name="tracker")
                evict = tg.create_task(self._evict_stale(), name="evict")
                retry = tg.create_task(self._record_worker(), name="records")
                stop = tg.create_task(shutdown_trigger(), name="shutdown")
                done, _ = await asyncio.wait({ami, stop}, return_when=asyncio.FIRST_COMPLETED)
                log.info("agent_stopping")
                await self.ami.close()
                for t in (ami, consumer, evict, retry, stop):
                    t.cancel()
                for t in list(self._background):
                    t.cancel()
                await asyncio.gather(*self._background, return_exceptions=True)
                await self.dispatcher.stop(timeout=5.0)
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatcher
                if ami in done and ami.exception() is not None:
                    raise ami.exception()  # type: ignore[misc]
            await runner.cleanup()
        finally:
            await self.agi.close()
            for gw in self.gateways.values():
                with contextlib.suppress(Exception):
                    await gw.close()
            await self.store.close()


def _signal_trigger(agent: AfterCallAgent) -> ShutdownTrigger:
    async def wait() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, agent.reload_rules)
        await stop.wait()

    return wait


async def run_agent(settings: Settings, *, dry_run: bool = False,
                    shutdown_trigger: ShutdownTrigger | None = None) -> int:
    agent = AfterCallAgent(settings, dry_run=dry_run)
    try:
        await agent.run(shutdown_trigger or _signal_trigger(agent))
    except* AftercallError as eg:
        raise eg.exceptions[0] from None
    return 0
