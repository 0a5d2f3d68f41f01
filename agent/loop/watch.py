"""One watched PBX: its AMI client, call tracker and CDR recovery, feeding the agent's one pipeline.

An agent holds one ``PbxWatch`` per PBX (rules.yaml ``pbxes:``, or the one PBX its settings
name). Each has its own AMI link, reconnects and backs off on its own, tracks its own calls
(so call ids of two PBXs never meet in one tracker) and stamps its name on every record it
emits; all of them hand finished records to the same record pipeline, store and gateways.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from agent.ami.client import AmiClient
from agent.ami.config import AmiConfig, config_from_link, config_from_settings
from agent.ami.inventory import EndpointWatch, Inventory
from agent.calls.hooks import WrapupCode
from agent.calls.pbx import receive_clock
from agent.calls.tracker import CallTracker
from agent.loop.pipeline import RecordPipeline
from agent.loop.recovery import Recovery
from agent.errors import AftercallError, outcome
from agent.metrics import Metrics
from agent.rules.loader import RuleSet
from agent.rules.tracking import agents_directory, pbx_profile
from agent.scalars import peer_address
from agent.settings import Settings
from agent.store.seams import CallLog

log = structlog.get_logger("aftercall.ami")

_PLAIN_ID = re.compile(r"\d+\.\d+")
#: How long a FastAGI hook naming a channel this agent has not yet seen waits for the channel's
#: own AMI events (queued behind others on a busy agent) before answering that it is unknown.
#: An idle agent answers as soon as it has handled what it had read.
AGI_WAIT_S = 2.0


class PbxWatch:
    """``ami.run()`` keeps the link, ``ami.consume(handle_event)`` tracks its calls."""

    def __init__(self, name: str, ami: AmiConfig, *, cdr_csv: Path | None,
                 rules: Callable[[], RuleSet], pipeline: RecordPipeline, store: CallLog,
                 metrics: Metrics, clock: Callable[[], datetime], ami_backlog: int,
                 spill_path: Path | None = None, shared: bool = False) -> None:
        """``spill_path``: where a stop keeps unstored records (the agent's, given to one
        watch only: those records carry their own PBX's name). ``shared``: other PBXs'
        calls go to the same store (this agent watches several, or the database is shared),
        so call ids may meet: calls are keyed by (PBX, call id) everywhere, and a plain id
        is only said, for logs and hooks that name a call by id alone."""
        self.name = name
        self._shared = shared
        # None until this login's first call: whether its id carries Asterisk's systemname.
        self.call_ids: str | None = None
        self._pipeline = pipeline
        rs = rules()
        # Events without a Timestamp header (timestampevents off) get the receive time.
        self.tracker = CallTracker(agents=agents_directory(rs), region=rs.defaults.region,
                                   pbx=pbx_profile(rs, name), clock=receive_clock())
        self._time_source_said: str | None = None
        self.recovery = Recovery(tracker=self.tracker, pipeline=pipeline, store=store,
                                 metrics=metrics, rules=rules, cdr_csv=cdr_csv, clock=clock,
                                 spill_path=spill_path)
        self.ami = AmiClient(replace(ami, queue_size=ami_backlog), on_login=self._on_login)
        # Trunks and phones as this PBX's PJSIP configuration says (read at each login).
        self.endpoints = EndpointWatch(self._detected, pbx=name)
        # AGI hooks waiting for a channel's first events (``sighting``): Uniqueid -> waiters.
        self._sightings: dict[str, list[asyncio.Future[None]]] = {}
        self._handling = False  # an event is being handled (its pipeline put may wait)

    async def handle_event(self, event: Any) -> None:
        self._handling = True
        try:
            records = self.tracker.feed(event)
            if self._sightings:
                self._sighted()
            for record in records:
                if self.call_ids is None:
                    self._check_call_id(record.call_id)
                await self._pipeline.put(record)
            if self.tracker.wrapups:  # wrap-up codes for calls that have ended (this PBX's)
                for code in self.tracker.take_wrapups():
                    await self._pipeline.wrapups.code(code)
            if self.tracker.time_source != self._time_source_said:
                self._say_time_source()
        finally:
            self._handling = False
        if self._sightings and self._caught_up():
            self._sighted(everyone=True)

    def _caught_up(self) -> bool:
        """Every event read from this PBX so far has been handled (none queued, none being
        handled; an empty queue means the socket is being read)."""
        return not self._handling and self.ami.queue.empty()

    def _sighted(self, *, everyone: bool = False) -> None:
        for key in [k for k in self._sightings if everyone or self.tracker.holds(k)]:
            for fut in self._sightings.pop(key):
                if not fut.done():
                    fut.set_result(None)

    async def sighting(self, key: str) -> None:
        """Returns once a call in progress here has the channel (Uniqueid) or Linkedid ``key``,
        or every event read from this PBX so far has been handled without it (at once if
        either is so now). Cancel it to stop waiting."""
        if self.tracker.holds(key) or self._caught_up():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sightings.setdefault(key, []).append(fut)
        try:
            await fut
        finally:
            waiting = self._sightings.get(key)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._sightings[key]

    def _check_call_id(self, call_id: str) -> None:
        """Asterisk without ``systemname`` numbers calls ``<epoch>.<n>``: two PBXs sharing a
        store may then give different calls one id. The store, the pipeline and the wrap-up
        waits key calls by (PBX, call id), so nothing is mixed up; but a person or a hook that
        names a call by id alone must then name its PBX too. Said once per login."""
        self.call_ids = "plain" if _PLAIN_ID.fullmatch(call_id) else "systemname"
        if self.call_ids == "plain" and self._shared:
            log.warning("pbx_call_ids_without_systemname", pbx=self.name, call_id=call_id,
                        impact="ids may repeat on another PBX: explain, /api/calls and AGI "
                               "hooks then need the PBX named (PBX:CALLID, pbx=)",
                        fix="set systemname in asterisk.conf [options] on every PBX sharing "
                            "this agent or database")

    def _say_time_source(self) -> None:
        """Once per login (``_on_login`` resets it): where call times come from; /healthz too."""
        source = self._time_source_said = self.tracker.time_source
        if source == "receive":
            log.warning("ami_timestamps_absent", pbx=self.name, using="receive_time",
                        fix="timestampevents = yes in manager.conf [general] for Asterisk's "
                            "own event times")
        elif source == "asterisk":
            log.info("ami_timestamps_present", pbx=self.name)

    async def _on_login(self, client: AmiClient) -> None:
        # Where event times come from is said again after each login: the PBX's
        # manager.conf (timestampevents) may have changed meanwhile.
        self.tracker.time_source = self._time_source_said = None
        self.call_ids = None  # systemname may have been set meanwhile
        await self.endpoints.at_login(client)  # first: recovered calls read as live ones
        await self.recovery.on_login(client)

    def _detected(self, inventory: Inventory) -> None:
        self.tracker.pbx = replace(self.tracker.pbx, detected=inventory.endpoints)

    def rules_changed(self, rules: RuleSet) -> None:
        """The tracker names agents (and reads national numbers) for records still to come;
        what detection found of the PBX's endpoints stays."""
        self.tracker.agents = agents_directory(rules)
        self.tracker.region = rules.defaults.region
        self.tracker.pbx = replace(pbx_profile(rules, self.name),
                                   detected=self.tracker.pbx.detected)

    def health(self) -> dict[str, Any]:
        st = self.ami.stats
        return {"ok": st.connected, "pbx": self.name, "reconnects": st.reconnects,
                "dropped": st.dropped, "queue_depth": self.ami.queue.qsize(),
                "reading_paused": st.paused,
                # least privilege: actions the AMI user could run that aftercall never does
                "excess_write_actions": list(st.excess_write),
                # "asterisk" (Timestamp headers) or "receive" (timestampevents is off)
                "event_times": self.tracker.time_source or "unknown",
                # "systemname" (ids cannot collide between PBXs) or "plain" <epoch>.<n>
                "call_ids": self.call_ids or "unknown"}

    def scraped(self, metrics: Metrics) -> None:
        """Read when /metrics is scraped, not set on every AMI event."""
        st = self.ami.stats
        metrics.ami_link(self.name, connected=st.connected, queued=self.ami.queue.qsize(),
                         dropped=st.dropped, paused=st.paused)


def watched_pbxes(settings: Settings, rules: RuleSet) -> list[tuple[str, AmiConfig, Path | None]]:
    """(name, AMI config, CDR file) of each PBX to watch: rules.yaml's ``pbxes:`` if it has
    any, else the one PBX the settings name (``--pbx``, ``--ami-*``, ``--cdr-csv``)."""
    if not rules.config.pbxes:
        return [(settings.pbx, config_from_settings(settings), settings.cdr_csv)]
    return [(p.name, config_from_link(p), p.cdr_csv) for p in rules.config.pbxes]


# -- the agent's watches together: what the composition root asks of all of them ---------------


# FastAGI does not say which PBX called, and PBXs without systemname give their calls (and
# channels) the same ids: a hook names its PBX with ``pbx=``; without it, the PBX whose AMI
# host the hook connected from (pbx_at), else the call is the one PBX's that knows that id,
# and none when two do (a guess could tag another PBX's call).


async def pbx_at(hosts: Iterable[tuple[str, str]], address: str | None) -> str | None:
    """The one PBX among ``(name, AMI host)`` whose host is ``address`` (a FastAGI peer's):
    a PBX runs its dialplan's hooks from its own machine, so PBXs on different hosts are told
    apart without ``pbx=``. None when no PBX, or more than one (all on one host, as in a lab),
    has that address; a host name is resolved each time (hooks are few, DNS may change)."""
    peer = peer_address(address)
    if peer is None:
        return None
    loop = asyncio.get_running_loop()
    found = []
    for name, host in hosts:
        addrs = {peer_address(host)}
        if None in addrs:  # a host name
            try:
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                continue
            addrs = {peer_address(str(i[4][0])) for i in infos}
        if peer in addrs:
            found.append(name)
    return found[0] if len(found) == 1 else None


def _named(watches: list[PbxWatch], pbx: str | None) -> list[PbxWatch]:
    if pbx is None:
        return watches
    chosen = [w for w in watches if w.name == pbx]
    if not chosen:
        log.warning("agi_pbx_unknown", pbx=pbx, watching=[w.name for w in watches])
    return chosen


def _ambiguous(what: str, key: str, holding: list[PbxWatch]) -> bool:
    if len(holding) < 2:
        return False
    log.warning("agi_call_ambiguous", hook=what, call=key, pbxes=[w.name for w in holding],
                fix="add pbx=NAME to the AGI hook, or set systemname on every PBX")
    return True


async def sighted(watches: list[PbxWatch], key: str, pbx: str | None = None,
                  timeout: float | None = None) -> bool:
    """For a hook that named a channel no PBX holds: wait until one does (its Newchannel was
    still queued), or until every PBX's events read so far have been handled without it (it
    is unknown), at most ``timeout`` (default: AGI_WAIT_S). True when a PBX holds it now."""
    chosen = _named(watches, pbx)
    waits = {asyncio.ensure_future(w.sighting(key)) for w in chosen}
    try:
        async with asyncio.timeout(AGI_WAIT_S if timeout is None else timeout):
            while waits and not any(w.tracker.holds(key) for w in chosen):
                _, waits = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        pass
    finally:
        for task in waits:
            task.cancel()
    return any(w.tracker.holds(key) for w in chosen)


def attach(watches: list[PbxWatch], uniqueid: str, channel: str, tags: tuple[str, ...],
           variables: Any, pbx: str | None = None) -> bool:
    """The AGI hook's tags onto the call in progress with that channel, on PBX ``pbx``."""
    chosen = _named(watches, pbx)
    key = uniqueid or channel
    holding = [w for w in chosen if w.tracker.holds(key)]
    if _ambiguous("attach", key, holding):
        return False
    return any(w.tracker.attach(key, tags=tags, vars=dict(variables))
               for w in holding or chosen)


def wrapup_code(watches: list[PbxWatch], code: str, call_id: str | None, agent: str | None,
                channel: str, pbx: str | None = None) -> WrapupCode | bool:
    """An agent's wrap-up code: True when a PBX still has the call up (it is on the call now),
    a ``WrapupCode`` for the calls already ended and waiting for one (naming its PBX when one
    is known), False when unknown or ambiguous."""
    chosen = _named(watches, pbx)
    if not chosen:
        return False
    if call_id and len(chosen) > 1:
        knowing = [w for w in chosen if call_id in w.tracker or w.tracker.ended(call_id)]
        if _ambiguous("wrapup", call_id, knowing):
            return False
        chosen = knowing or chosen
    for w in chosen:
        got = w.tracker.wrapup(code, call_id=call_id, agent=agent, channel=channel)
        if isinstance(got, WrapupCode):
            # Its PBX is known when one PBX is left; else the waits find the one holding it.
            return got if len(chosen) == 1 else replace(got, pbx=None)
        if got:
            return True
    return False


async def run_links(watches: list[PbxWatch], ready: asyncio.Event) -> AftercallError | None:
    """Every PBX's AMI link until the first fails for good (its error is returned, as
    ``outcome`` does); meanwhile sets ``ready`` once every PBX has logged in once."""
    if len(watches) == 1:
        return await outcome(watches[0].ami.run())

    async def all_ready() -> None:
        for w in watches:
            await w.recovery.ready.wait()
        ready.set()

    runs = [asyncio.create_task(outcome(w.ami.run()), name=f"ami-{w.name}") for w in watches]
    waiter = asyncio.create_task(all_ready())
    try:
        done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for t in (*runs, waiter):
            t.cancel()
        await asyncio.gather(*runs, waiter, return_exceptions=True)


async def evict_stale(watches: list[PbxWatch], clock: Callable[[], datetime]) -> None:
    """Once a minute: calls a tracker has held past belief are dropped (said), and the odd
    input trackers counted (they never raise on it) is said."""
    while True:
        await asyncio.sleep(60)
        for w in watches:
            for call_id in w.tracker.evict_stale(clock().timestamp()):
                log.warning("call_evicted_stale", call_id=call_id, pbx=w.name)
            if w.tracker.warnings:
                log.warning("ami_input_odd", pbx=w.name, **dict(w.tracker.warnings))
                w.tracker.warnings.clear()


async def stop_reading(watches: list[PbxWatch], deadline: float) -> None:
    """Close every AMI link, then give the trackers until ``deadline`` (loop time) to take the
    events already read."""
    for w in watches:
        await w.ami.close()
    loop = asyncio.get_running_loop()
    while any(not w.ami.queue.empty() for w in watches) and loop.time() < deadline:
        await asyncio.sleep(0.01)  # the tracker tasks are taking them
