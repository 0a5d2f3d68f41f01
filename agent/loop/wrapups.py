"""Calls waiting for their agent's wrap-up code: held until the code or the wait's end.

A call that must wait (agent.rules.wrapup) is stored at once, as every finished call is, with
its rules' outcomes saying "waiting for the agent's wrap-up code (until ...)" (the calls view
shows it), and held here in memory with its due time. It goes back through the record
pipeline when its code comes (``code``) or its wait ends (``run``'s timer): the pipeline
then decides it like any record, and the call's idempotency keys keep it to one text per
rule and recipient whatever happens twice. Nothing about the wait is kept anywhere but in
those stored outcomes, so an agent that stops (even killed) finds the calls still waiting at
its next start (``recover``: calls that ended within the last hour and are marked waiting)
and holds them again until their due time, or decides them at once when it has passed. A
code that arrives while the agent is down is lost: that call is decided without it.

A call is (PBX, call id) here as everywhere: PBXs without Asterisk's systemname number their
calls alike, so a code names its PBX (the tracker that read it stamps it). A code whose PBX is
unknown (FastAGI with several PBXs and no ``pbx=``) goes to the one PBX holding that call or
agent, and to none when two do.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from agent.calls.hooks import WrapupCode
from agent.models import CallRecord, Trigger
from agent.rules.loader import RuleSet
from agent.rules.wrapup import is_waiting, wrapup_due
from agent.store.base import CallFilter
from agent.store.seams import CallLog

log = structlog.get_logger("aftercall.wrapups")

#: At start, calls that ended this long before now (beyond the longest wait) are looked at.
RECOVER_WINDOW = timedelta(hours=1)
#: Codes for calls not held (yet): kept for a call whose record is still on its way.
EARLY_CODES = 4096


class WrapupWaits:
    """``hold`` a record until ``due``; ``code`` releases it with its code; ``run`` releases
    the ones whose wait has ended (and first takes up those a previous run left waiting)."""

    def __init__(self, store: CallLog, *, rules: Callable[[], RuleSet],
                 clock: Callable[[], datetime],
                 put: Callable[[CallRecord], Awaitable[int]]) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._put = put
        self._held: dict[tuple[str, str], tuple[datetime, CallRecord]] = {}  # (pbx, call id)
        # (pbx, call id) -> a code that came before its record
        self._early: dict[tuple[str, str], str] = {}
        self._wake = asyncio.Event()

    @property
    def held(self) -> int:
        return len(self._held)

    def with_early_code(self, record: CallRecord) -> CallRecord:
        """``record`` with the code that came for it before it reached the rules, if any."""
        if self._early and record.wrapup is None and record.trigger is Trigger.CALL_COMPLETED:
            code = self._early.pop((record.pbx, record.call_id), None)
            if code is not None:
                return dataclasses.replace(record, wrapup=code)
        return record

    def hold(self, record: CallRecord, due: datetime) -> CallRecord | None:
        """Keep ``record`` until ``due``. Returns it with its code instead when the code came
        meanwhile (while the call was being stored): the caller decides it now."""
        early = self.with_early_code(record)
        if early is not record:
            return early
        self._held[(record.pbx, record.call_id)] = (due, record)
        self._wake.set()
        log.info("call_awaiting_wrapup", call_id=record.call_id, pbx=record.pbx,
                 agent=record.agent, until=due.isoformat())
        return None

    async def code(self, w: WrapupCode) -> bool:
        """A wrap-up code for a call that has ended. True when it reached a waiting call (or
        one on its way to the rules); False when it names nothing waiting."""
        keys = self._named(w) if w.call_id is not None else self._newest_of(w)
        if len(keys) > 1:
            log.warning("wrapup_ambiguous", call_id=w.call_id, agent=w.agent, code=w.code,
                        pbxes=sorted(k[0] for k in keys),
                        fix="name the PBX: pbx=NAME in the AGI hook, or raise the UserEvent "
                            "on the PBX itself")
            return False
        if keys:
            _, record = self._held.pop(keys[0])
            log.info("wrapup_received", call_id=record.call_id, pbx=record.pbx, code=w.code,
                     agent=record.agent)
            await self._put(dataclasses.replace(record, wrapup=w.code))
            return True
        if w.call_id is not None and w.pbx is not None:
            # Its record may still be on its way to the rules: kept for it (bounded).
            if len(self._early) >= EARLY_CODES:
                del self._early[next(iter(self._early))]
            self._early[(w.pbx, w.call_id)] = w.code
            log.info("wrapup_kept", call_id=w.call_id, pbx=w.pbx, code=w.code,
                     hint="no call waits for it now: used if its record is still to come")
            return True
        log.warning("wrapup_unmatched", call_id=w.call_id, agent=w.agent, code=w.code,
                    hint="no call of this agent is waiting for a wrap-up code"
                    if w.call_id is None else "no PBX named and no call waits with this id")
        return False

    def _named(self, w: WrapupCode) -> list[tuple[str, str]]:
        """The held calls ``w`` names by id: its PBX's, or (PBX unknown) every PBX's."""
        if w.pbx is not None:
            key = (w.pbx, w.call_id or "")
            return [key] if key in self._held else []
        return [k for k in self._held if k[1] == w.call_id]

    def _newest_of(self, w: WrapupCode) -> list[tuple[str, str]]:
        """The agent's most recent held call on ``w``'s PBX; with the PBX unknown, on each
        PBX that holds one of that agent's calls (more than one is ambiguous)."""
        if not w.agent:
            return []
        best: dict[str, tuple[datetime, tuple[str, str]]] = {}
        for key, (_, r) in self._held.items():
            if (r.agent == w.agent and r.ended_at is not None
                    and (w.pbx is None or key[0] == w.pbx)
                    and (key[0] not in best or r.ended_at > best[key[0]][0])):
                best[key[0]] = (r.ended_at, key)
        return [key for _, key in best.values()]

    async def run(self) -> None:
        """Takes up what a previous run left waiting, then releases each held call when its
        wait ends."""
        try:
            await self.recover()
        except Exception:  # a read that fails must not stop the timer: logged, held calls go on
            log.exception("wrapup_recovery_failed")
        while True:
            now = self._clock()
            for key, (due, record) in list(self._held.items()):
                if due <= now and self._held.pop(key, None) is not None:
                    log.info("wrapup_timed_out", call_id=record.call_id, pbx=record.pbx,
                             agent=record.agent)
                    await self._put(record)
            self._wake.clear()
            nxt = min((due for due, _ in self._held.values()), default=None)
            timeout = None if nxt is None else max(0.0, (nxt - self._clock()).total_seconds())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def recover(self) -> int:
        """Hold again the calls a previous run stored as waiting. Returns how many."""
        rules = self._rules()
        waits = [(r.wrapup or rules.defaults.wrapup).wait for r in rules.rules
                 if r.match.wrapup is not None]
        if not waits:
            return 0
        now = self._clock()
        calls = await self._store.list_calls(CallFilter(
            since=now - max(waits) - RECOVER_WINDOW, limit=10_000))
        taken = 0
        for summary in calls:
            record = summary.record
            if summary.pbx and summary.pbx != record.pbx:  # the row's key is the call's
                record = dataclasses.replace(record, pbx=summary.pbx)
            if (summary.messages or record.wrapup is not None
                    or (record.pbx, record.call_id) in self._held
                    or record.trigger is not Trigger.CALL_COMPLETED):
                continue
            if not is_waiting(await self._store.rule_outcomes(record.call_id, pbx=record.pbx)):
                continue
            taken += 1
            due = wrapup_due(rules, record, now)
            if due is None:
                log.info("wrapup_timed_out", call_id=record.call_id, pbx=record.pbx,
                         agent=record.agent, while_="the agent was stopped")
                await self._put(record)
            elif (early := self.hold(record, due)) is not None:
                await self._put(early)
        if taken:
            log.info("wrapup_waits_recovered", calls=taken)
        return taken
