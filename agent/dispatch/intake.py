"""The dispatcher's intake: decisions -> policy -> their outbox rows, written in one transaction."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from agent.dispatch.retry import Clock, mask_number
from agent.errors import StoreError
from agent.metrics import Metrics
from agent.models import (
    CallRecord,
    Decision,
    MessageState,
    RecipientKind,
    RuleOutcome,
    SuppressReason,
)
from agent.sms.policy import Limits, evaluate
from agent.sms.ratecount import RefusalBurst, SendCounters
from agent.sms.spend import SpendCounters
from agent.store.base import (
    FactsAsk,
    MessageFilter,
    MessageRow,
    NewMessage,
    PeerSend,
    PolicyFacts,
)
from agent.store.seams import DispatchStore

log = structlog.get_logger(__name__)

class Outlet(Protocol):
    """The worker's side of the hand-off (``Dispatcher``): a text that can go at once gets a
    slot of its gateway's window before it is written, so its first attempt is claimed in the
    same commit and it is submitted straight after, with no second commit between."""

    async def reserve(self, gateway: str) -> str | None:
        """A slot on the gateway a fresh row for ``gateway`` would go through now; None when
        it cannot go at once (gateway down or failing over, window or capacity full)."""

    def unreserve(self, via: str) -> None:
        """Give back a slot that no row took (a duplicate, a write that failed)."""

    def queued(self, row: MessageRow, via: str | None) -> None:
        """A row just queued (holding the slot ``via``, when it got one)."""


class Intake:
    """Records what the rules decided. Its only hand-off to the worker is ``Outlet.queued``
    with a row it just queued, so a fresh message starts without an outbox query."""

    def __init__(self, store: DispatchStore, *, limits: Limits, dry_run: bool, clock: Clock,
                 expiry: timedelta, metrics: Metrics | None, outlet: Outlet) -> None:
        self._store = store
        self._limits = limits
        self._dry_run = dry_run
        self._clock = clock
        self._expiry = expiry
        self._metrics = metrics
        self._outlet = outlet
        self._counters: SendCounters | None = None  # seeded from the store by the first intake
        self._spend: SpendCounters | None = None  # the same, for spend caps
        # When each was seeded: other agents' texts written since then are counted into them
        # (count_others), those before are in the seed.
        self._counters_from = self._spend_from = clock()
        self._counters_lock = asyncio.Lock()
        # The counters are changed by ``_judge``, which may run in the store's writer thread,
        # and by the loop as rows are settled: each change holds this (never for long).
        self._guard = threading.Lock()
        self._bursts = RefusalBurst()
        if metrics is not None:
            metrics.on_scrape(lambda: metrics.refusal_bursts(self._bursts.refresh(self._clock())))
            # Spend so far is read off the counters when /metrics is scraped, not set by
            # every text: that is work on the path from the hangup to the SMSC.
            metrics.on_scrape(self._spend_scraped)

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        """New limits (a rules reload): the counters start again from the store."""
        self._limits = limits
        self._counters = None
        self._spend = None

    async def _send_counters(self) -> SendCounters:
        """The rate-limit counters, seeded from the store the first time (and after a reload):
        every text sent within the longest window is counted once, then kept up in memory."""
        async with self._counters_lock:
            if self._counters is None:
                limits = self._limits
                counters = SendCounters(limits)
                span = limits.longest_window
                self._counters_from = self._clock()
                if span:
                    counters.seed(await self._store.sent_since(self._clock() - span))
                if self._limits is limits:
                    self._counters = counters
                return counters
            return self._counters

    async def _spend_counters(self) -> SpendCounters | None:
        """Spend totals for the current local day and month, seeded from the store the first
        time a cap applies (and after a reload); None when no text has a price."""
        spend = self._limits.spend
        if not spend.active:
            return None
        async with self._counters_lock:
            if self._spend is None:
                limits = self._limits
                counters = SpendCounters(spend.timezone)
                now = self._spend_from = self._clock()
                # A month and a day back covers the local month in any zone.
                rows = await self._store.segments_sent_since(now - timedelta(days=32))
                counters.seed((rule, cost, at) for rule, gw, number, segs, at in rows
                              if (cost := spend.cost(gw, number, segs)) is not None)
                if self._limits is not limits:
                    return counters
                self._spend = counters
            return self._spend

    def count_others(self, sends: Iterable[PeerSend]) -> None:
        """Texts that other agents sharing the store wrote (dispatch/peers.py), counted in the
        global and daily windows and the spend totals as this agent's own are: the limits hold
        for all the agents together. Those the seed read held already are not counted again."""
        counters, spend = self._counters, self._spend
        with self._guard:
            for s in sends:
                if counters is not None and s.at >= self._counters_from:
                    counters.add_written(s.recipient_kind, s.at)
                if spend is not None and s.at >= self._spend_from:
                    cost = self._limits.spend.cost(s.gateway, s.number, s.segments)
                    if cost is not None:
                        spend.add(s.rule, cost, s.at)

    def _spend_scraped(self) -> None:
        with self._guard:
            if self._metrics is not None and self._spend is not None:
                spent, caps = self._spend.totals(self._clock()), self._limits.spend.caps
                self._metrics.spend(spent.day, spent.month, caps.daily, caps.monthly)

    async def handle(
        self, decisions: list[Decision], call: CallRecord | None = None, *,
        confirms_opt_out: bool = False, outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[MessageRow]:
        """Apply policies and record one row per decision (suppressed ones too), with the call
        record, what each rule said about it (``outcomes``) and the decisions' links, in one
        store transaction (``Store.decide_and_record``: the policies' facts are read and
        judged in the store's write transaction, SQLite's writer thread, so a record costs
        one hop there and back).
        Raises StoreError if the store cannot record; repeating the call is safe (idempotency
        keys). ``confirms_opt_out``: see ``_judge``."""
        counters = await self._send_counters()
        # Spend totals are read from the store once something is capped (a month of rows);
        # from then on every text counts.
        capped = self._limits.spend.caps or any(d.spend_caps for d in decisions)
        spend = await self._spend_counters() if capped else self._spend
        limits = self._limits
        now = self._clock()
        asks = [self._ask(d, now, limits) for d in decisions]
        # A window slot for each decision that may go at once, taken before the write so the
        # first attempt is claimed in its commit; those the policies stop are given back.
        slots: dict[str, list[str]] = {}  # gateway -> routes with a slot taken
        for d, a in zip(decisions, asks, strict=True):
            if a is not None and not self._dry_run:
                via = await self._outlet.reserve(d.gateway)
                if via is not None:
                    slots.setdefault(d.gateway, []).append(via)
        decided: list[NewMessage] = []
        gone = False  # the caller stopped waiting: decide nothing more

        def decide(facts: Sequence[PolicyFacts | None]) -> list[NewMessage]:
            with self._guard:
                if gone:
                    raise StoreError("intake abandoned before its rows were decided")
                for d, f in zip(decisions, facts, strict=True):
                    m = self._judge(d, f, now, limits, counters, decided, spend,
                                    confirms_opt_out=confirms_opt_out)
                    if m.state is MessageState.QUEUED and slots.get(d.gateway):
                        m = replace(m, claim_via=slots[d.gateway].pop(0))
                    decided.append(m)
                return list(decided)

        # What the store committed, handed to ``landed`` on the loop before this resumes.
        landed: list[tuple[list[NewMessage], list[tuple[MessageRow, bool]]]] = []

        def on_commit(result: tuple[list[NewMessage], list[tuple[MessageRow, bool]]]) -> None:
            # Every fresh queued row goes to the worker, and a claimed one's submit (a task)
            # starts in the writer's answer itself: its first loop turn comes before this
            # intake resumes, so counters, metrics, log lines and what the caller does with
            # the rows are not on the path to the SMSC.
            landed.append(result)
            self._hand_over(*result)

        try:
            messages, written = await self._store.decide_and_record(
                call, asks, decide, now=now, outcomes=outcomes, committed=on_commit)
        except BaseException:
            if landed:  # committed and handed over: only this caller stopped waiting
                self._unreserve(slots)
                self._settle(counters, spend, *landed[0], now)
                raise
            with self._guard:
                gone = True
                for m in decided:
                    if _counted(m):
                        counters.settle(m.decision.recipient, m.decision.number, now,
                                        written=False)
                        self._spend_add(spend, m, now, undo=True)
            for m in decided:
                if m.claim_via is not None:
                    self._outlet.unreserve(m.claim_via)
            self._unreserve(slots)
            raise
        self._unreserve(slots)  # the slots no queued row took
        self._settle(counters, spend, messages, written, now)
        try:
            # A store that did not call back: handed over now, and a claimed text's submit
            # runs up to its submit_sm on the wire before the log lines.
            if not landed and self._hand_over(messages, written):
                await asyncio.sleep(0)
        finally:
            self._after_intake(messages, written, now)
        return [row for row, _ in written]

    def _settle(self, counters: SendCounters, spend: SpendCounters | None,
                messages: list[NewMessage], written: list[tuple[MessageRow, bool]],
                now: datetime) -> None:
        """The counters learn which counted texts were written (a duplicate was not)."""
        with self._guard:
            for m, (_, created) in zip(messages, written, strict=True):
                if _counted(m):
                    counters.settle(m.decision.recipient, m.decision.number, now,
                                    written=created)
                    if not created:
                        self._spend_add(spend, m, now, undo=True)

    def _hand_over(self, messages: list[NewMessage],
                   written: list[tuple[MessageRow, bool]]) -> bool:
        """Fresh queued rows to the outlet (a claimed one starts its submit); the slot of a
        duplicate goes back. True when a submit was started."""
        started = False
        for m, (row, created) in zip(messages, written, strict=True):
            if not created:
                if m.claim_via is not None:
                    self._outlet.unreserve(m.claim_via)
            elif m.state is MessageState.QUEUED:
                self._outlet.queued(row, m.claim_via)
                started = started or m.claim_via is not None
        return started

    def _after_intake(self, messages: list[NewMessage],
                      written: list[tuple[MessageRow, bool]], now: datetime) -> None:
        """An intake's log lines, once its texts are on their way."""
        for m, (row, created) in zip(messages, written, strict=True):
            if created and m.state is MessageState.SUPPRESSED:
                self._note_refusal(row.reason, now)
            self._log_intake(m, row, created)

    def _unreserve(self, slots: dict[str, list[str]]) -> None:
        for vias in slots.values():
            while vias:
                self._outlet.unreserve(vias.pop())

    def _ask(self, d: Decision, now: datetime, limits: Limits) -> FactsAsk | None:
        """The facts the policies need about ``d``'s recipient; None when none decide it (no
        number, or the engine already suppressed it)."""
        if d.number is None or d.suppress is not None:
            return None
        per_number = limits.audience(d.recipient).per_number
        return FactsAsk(d.number, d.rule, now - per_number.window if per_number else None,
                        d.recipient == RecipientKind.AGENT)

    def _spend_add(self, spend: SpendCounters | None, m: NewMessage, now: datetime, *,
                   undo: bool = False) -> None:
        d = m.decision
        cost = self._limits.spend.cost(d.gateway, d.number, d.segments)
        if spend is not None and cost is not None:
            spend.add(d.rule, cost, now, sign=-1 if undo else 1)

    def _judge(
        self, d: Decision, facts: PolicyFacts | None, now: datetime, limits: Limits,
        counters: SendCounters, earlier: list[NewMessage], spend: SpendCounters | None = None,
        *, confirms_opt_out: bool = False,
    ) -> NewMessage:
        """The policies' verdict on one decision: the row it becomes (pure but for the
        counters, which the caller holds ``_guard`` for; it may run in the store's thread).
        A text that will go is counted at once, so a concurrent intake sees it. The store
        does not hold this record's ``earlier`` rows yet (they are written together): a
        cooldown counts them too. ``confirms_opt_out``: the one text an opted-out number may
        get (the STOP acknowledgement); every other policy still applies to it."""
        last_sent = facts.last_sent_at if facts else None
        if any(_counted(m) and m.decision.number == d.number and m.decision.rule == d.rule
               for m in earlier):
            last_sent = now
        try:
            outcome = evaluate(
                d,
                now=now,
                opted_out=(facts.opted_out and not confirms_opt_out) if facts else False,
                dnd=facts.dnd if facts else False,
                last_sent_at=last_sent,
                limits=limits,
                dry_run=self._dry_run,
                sent=counters.counts(d.recipient, d.number, now,
                                     facts.sent_to_number if facts else 0),
                spent=spend.spent(d.rule, now) if spend is not None else None,
            )
        except ValueError as exc:  # a decision the schema should have refused: log it, send none
            return NewMessage(d, MessageState.FAILED, reason="policy_error", detail=str(exc))
        reason = outcome.reason.value if outcome.reason else None
        if outcome.action == "send":
            m = NewMessage(d, MessageState.QUEUED, next_attempt_at=now,
                           expires_at=self._expires(d, now))
        elif outcome.action == "defer":
            # A scheduled text is worth sending until max_age after it is due.
            expires = (outcome.not_before + timedelta(seconds=d.max_age_seconds)
                       if d.not_before is not None and d.max_age_seconds is not None
                       and outcome.not_before is not None else None)
            m = NewMessage(d, MessageState.DEFERRED, reason, outcome.detail,
                           next_attempt_at=outcome.not_before, expires_at=expires)
        else:
            m = NewMessage(d, MessageState.SUPPRESSED, reason, outcome.detail)
        if _counted(m):
            counters.add(d.recipient, d.number, now)
            self._spend_add(spend, m, now)
        return m

    async def cancel_scheduled(self, number: str, call_id: str, now: datetime, *,
                               pbx: str) -> list[str]:
        """A newer answered call from ``number`` (call ``call_id`` of ``pbx``): its texts
        scheduled with ``unless: {called_again: true}`` by earlier calls are suppressed
        (called_again). The same id on another PBX is another call."""
        pending = await self._store.list_messages(MessageFilter(
            states={MessageState.DEFERRED}, number=number, limit=None))
        cancelled = []
        for row in pending:
            if (row.reason != SuppressReason.SCHEDULED_UNLESS_CALLED
                    or (row.call_id, row.pbx) == (call_id, pbx)):
                continue
            done = await self._store.transition(
                row.id, MessageState.SUPPRESSED, now=now, reason=SuppressReason.CALLED_AGAIN,
                detail=f"the number called again and was answered (call {call_id})",
                from_states={MessageState.DEFERRED})
            if done is not None:
                cancelled.append(row.id)
                log.info("sms_cancelled", message_id=row.id, rule=row.rule,
                         to=mask_number(number), reason="called_again", call_id=call_id,
                         pbx=pbx)
                if self._metrics is not None:
                    self._metrics.message_state(MessageState.SUPPRESSED,
                                                SuppressReason.CALLED_AGAIN)
        return cancelled

    def _log_intake(self, m: NewMessage, row: MessageRow, created: bool) -> None:
        """One log line per decision (``handle`` handed the rows over already)."""
        d, state = m.decision, m.state
        fields = {
            "message_id": row.id,
            "call_id": d.call_id,
            "rule": d.rule,
            "to": mask_number(d.number),
        }
        if not created:
            log.info("sms_duplicate_ignored", state=row.state.value, **fields)
        elif state is MessageState.FAILED:
            log.error("sms_failed", reason=m.reason, detail=m.detail, **fields)
        elif state is MessageState.QUEUED:
            log.info("sms_queued", gateway=d.gateway, segments=d.segments, **fields)
        elif state is MessageState.DEFERRED:
            log.info(
                "sms_deferred",
                not_before=m.next_attempt_at.isoformat() if m.next_attempt_at else None,
                reason=row.reason,
                **fields,
            )
        else:
            # detail stays in the row: an engine's detail may quote the raw number.
            log.info("sms_suppressed", reason=row.reason, **fields)

    def _note_refusal(self, reason: str | None, now: datetime) -> None:
        burst = self._bursts.note(reason, now)
        if burst is None:
            return
        log.warning("sms_refusal_burst", reason=burst.reason, count=burst.count,
                    window_seconds=burst.window_seconds,
                    hint="SMS pumping, or a limit or allowed_countries set too tight")
        if self._metrics is not None:
            self._metrics.refusal_burst(burst.reason)

    def _expires(self, d: Decision, now: datetime) -> datetime:
        """An after-call SMS is worth sending until the call is ``max_age`` old (a gateway
        outage must not deliver yesterday's "sorry we missed you"), and never past ``expiry``."""
        expires = now + self._expiry
        if d.max_age_seconds is not None and d.call_ended_at is not None:
            expires = min(expires, d.call_ended_at + timedelta(seconds=d.max_age_seconds))
        return expires


def _counted(m: NewMessage) -> bool:
    """Rows that count as sent for rate limits and cooldowns (they go, now or later)."""
    return m.state in (MessageState.QUEUED, MessageState.DEFERRED)
