"""The Store Protocol and its row types; every backend (SQLite, later PostgreSQL) honours it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent.models import (
    CallRecord,
    Decision,
    InboundSms,
    MessageState,
    Receipt,
    RecipientKind,
    RuleOutcome,
    Trigger,
)


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One outbox/log row: every decision becomes one, sent or not. Times are aware UTC."""

    id: str
    idempotency_key: str
    call_id: str
    rule: str
    trigger: Trigger
    recipient_kind: RecipientKind
    number: str | None
    template: str
    gateway: str
    sender_id: str
    text: str | None
    encoding: str
    segments: int
    category: str
    dlt_template_id: str | None
    dlt_entity_id: str | None
    state: MessageState
    reason: str | None  # a SuppressReason value, or a gateway's short reason word
    detail: str | None
    attempts: int
    smsc_ids: tuple[str, ...]
    error_code: str | None
    created_at: datetime
    queued_at: datetime | None
    submitted_at: datetime | None
    final_at: datetime | None
    next_attempt_at: datetime | None
    submitting_since: datetime | None  # set just before a submit; left set = outcome unknown
    expires_at: datetime | None
    call_ended_at: datetime | None
    hangup_to_submit_ms: float | None
    updated_at: datetime
    pbx: str = "default"  # the PBX of the call it was decided for


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One decision as the policies left it, to be written by ``Store.record_call``."""

    decision: Decision
    state: MessageState
    reason: str | None = None
    detail: str | None = None
    next_attempt_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    message_id: str
    at: datetime
    state: MessageState
    reason: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    id: int
    message_id: str | None  # None: unmatched (unknown smsc id, or arrived before submit_resp)
    gateway: str
    smsc_id: str | None
    state: str
    error_code: str | None
    done_at: datetime | None
    received_at: datetime
    raw: str


# Receipts come from the network: whoever holds one message's receipt URL (or an SMSC account
# shared with other systems) can send distinct receipts without end. The store keeps at most
# this many per message (more are ignored, as duplicates are) and the newest this many
# unmatched ones per gateway (older ones are pruned as new ones arrive).
MAX_RECEIPTS_PER_MESSAGE = 64
MAX_UNMATCHED_RECEIPTS = 10_000


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What ``apply_receipt`` did. ``changed`` means the message row moved to a new state."""

    receipt_id: int | None  # None for an exact duplicate (nothing stored)
    message: MessageRow | None
    duplicate: bool
    changed: bool


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What policy.evaluate needs to know about a recipient, read in one round trip."""

    opted_out: bool
    dnd: bool
    last_sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class LinkRow:
    code: str
    message_id: str | None
    url: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    problems: tuple[str, ...]  # "file:line: why", one per skipped row


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Filters for the log, reports and export; every field is optional and they AND together."""

    states: Collection[MessageState] | None = None
    rule: str | None = None
    call_id: str | None = None
    number: str | None = None
    gateway: str | None = None
    pbx: str | None = None
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until
    limit: int | None = 1000
    offset: int = 0
    newest_first: bool = True


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Filters for the calls view; every field is optional and they AND together. ``number``
    finds calls from that caller and calls that texted it (an agent's mobile, say)."""

    since: datetime | None = None  # ended_at >= since
    until: datetime | None = None  # ended_at < until
    number: str | None = None  # E.164, or the last digits of one (at least 4)
    call_id: str | None = None
    queue: str | None = None
    agent: str | None = None
    disposition: str | None = None
    pbx: str | None = None
    limit: int = 200
    offset: int = 0


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One call in the calls view: its record and the state of each message decided for it."""

    record: CallRecord
    pbx: str | None
    messages: tuple[tuple[str, MessageState, str | None], ...]  # (rule, state, reason)


@dataclass(frozen=True, slots=True)
class ListEntry:
    number: str
    at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class ListEvent:
    """One change to the opt-out or DND list: ``action`` is add, remove or import."""

    number: str
    list: str  # "optout" | "dnd"
    action: str
    at: datetime
    who: str


@dataclass(frozen=True, slots=True)
class ReplyRow:
    id: int
    message_id: str | None
    number: str
    text: str
    keyword: str | None
    action: str | None
    received_at: datetime


T = TypeVar("T")

# -- what reports read: small tallies the database aggregated (agent.reports.figures adds them up)


@dataclass(frozen=True, slots=True)
class Tally:
    """Messages sharing rule, gateway, state, reason and error code."""

    rule: str
    gateway: str
    state: str
    reason: str | None
    error_code: str | None
    count: int
    sent: int  # of those, submitted to a gateway
    segments: int  # segments of the sent ones


@dataclass(frozen=True, slots=True)
class DayTally:
    day: date  # UTC day the decision was recorded
    state: str
    count: int
    sent: int


@dataclass(frozen=True, slots=True)
class LinkTally:
    """Messages carrying a tracked link, by rule, gateway and whether they were delivered."""

    rule: str
    gateway: str
    delivered: bool
    linked: int
    clicked: int  # clicked at least once
    clicks: int


@dataclass(frozen=True, slots=True)
class ReplyTally:
    rule: str
    gateway: str
    label: str  # positive, neutral, negative, unrated, or keyword
    count: int
    rating_sum: int
    ratings: int
    opt_outs: int  # distinct messages answered with an opt-out


@dataclass(frozen=True, slots=True)
class Percentile:
    scope: str  # all, rule or gateway
    key: str  # the rule or gateway ("" for all)
    metric: str  # h2s (ms) or delivery (s)
    q: int
    value: float


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the store aggregated for one report."""

    tallies: tuple[Tally, ...] = ()
    days: tuple[DayTally, ...] = ()
    links: tuple[LinkTally, ...] = ()
    replies: tuple[ReplyTally, ...] = ()
    percentiles: tuple[Percentile, ...] = ()


class ReportSource(Protocol):
    """What reports, the SMS log API and exports read. Every method aggregates or pages in the
    database, off the event loop (SQLite: a read-only connection in a worker thread)."""

    async def report_data(self, f: MessageFilter) -> ReportData:
        """GROUP BY tallies and exact nearest-rank percentiles for messages matching ``f``."""
        ...

    async def log_page(self, f: MessageFilter, *, unmasked: bool = False) -> list[dict[str, Any]]:
        """``f.limit`` log rows from ``f.offset`` (agent.reports' export columns)."""
        ...

    async def log_count(self, f: MessageFilter, cap: int) -> tuple[int, bool]:
        """Messages matching ``f``, counted up to ``cap`` (True when there are more)."""
        ...

    async def pbx_names(self) -> list[str]:
        """Every PBX named on a message or a call, sorted (the dashboard's PBX picker)."""
        ...

    def log_batches(self, f: MessageFilter, size: int, *,
                    unmasked: bool = True) -> AsyncIterator[list[dict[str, Any]]]:
        """Every log row matching ``f`` in batches of ``size``, for streaming exports."""
        ...

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` off the event loop (figures, JSON encoding of a page)."""
        ...


class Store(Protocol):
    """Durable state of the agent. Writes raise StoreError when they cannot be recorded; ``healthy``
    is False from such a failure until the next successful write."""

    @property
    def healthy(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    async def close(self) -> None: ...

    async def health(self) -> bool: ...

    # calls
    async def save_call(self, record: CallRecord, *, now: datetime | None = None) -> None: ...

    async def get_call(self, call_id: str) -> CallRecord | None: ...

    async def newest_call_end(self, pbx: str | None = None) -> datetime | None: ...

    async def record_rule_outcomes(
        self, call_id: str, trigger: Trigger, outcomes: Sequence[RuleOutcome], *, now: datetime
    ) -> None: ...

    async def rule_outcomes(self, call_id: str) -> list[RuleOutcome]: ...

    async def list_calls(self, filters: CallFilter) -> list[CallSummary]: ...

    async def record_call(
        self, call: CallRecord | None, messages: Sequence[NewMessage], *, now: datetime,
        outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[tuple[MessageRow, bool]]:
        """The write path of one call record, in ONE transaction: the call row (when given)
        with ``outcomes`` (what each rule said on its trigger, replacing any earlier
        judgement, as ``record_rule_outcomes``), one message row per decision with its first
        event (an existing idempotency key returns that row with False), and the tracked links
        each new row's decision carries, counted against the first new row that carries them.
        All or nothing: raises StoreError."""
        ...

    # messages
    async def insert_message(
        self,
        decision: Decision,
        *,
        state: MessageState,
        now: datetime,
        reason: str | None = None,
        detail: str | None = None,
        next_attempt_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[MessageRow, bool]: ...

    async def get_message(self, message_id: str) -> MessageRow | None: ...

    async def transition(
        self,
        message_id: str,
        state: MessageState,
        *,
        now: datetime,
        reason: str | None = None,
        detail: str | None = None,
        from_states: Collection[MessageState] | None = None,
        **fields: Any,
    ) -> MessageRow | None: ...

    async def claim_for_submit(
        self, message_id: str, *, now: datetime, gateway: str | None = None
    ) -> MessageRow | None: ...

    async def record_submit(
        self,
        message_id: str,
        *,
        gateway: str,
        smsc_ids: Sequence[str],
        now: datetime,
        hangup_to_submit_ms: float | None,
    ) -> MessageRow | None: ...

    async def recover_in_flight(
        self, *, now: datetime, started_before: datetime | None = None
    ) -> list[MessageRow]: ...

    async def due_messages(self, now: datetime, limit: int) -> list[MessageRow]: ...

    async def next_due_at(self) -> datetime | None: ...

    async def messages_in_state(
        self, state: MessageState, *, limit: int | None = None
    ) -> list[MessageRow]: ...

    async def message_events(self, message_id: str) -> list[MessageEvent]: ...

    async def list_messages(self, filters: MessageFilter | None = None) -> list[MessageRow]: ...

    async def latest_message_to(self, number: str) -> MessageRow | None: ...

    # receipts
    async def find_by_smsc_id(self, gateway: str, smsc_id: str) -> MessageRow | None: ...

    async def apply_receipt(
        self, receipt: Receipt, *, now: datetime | None = None
    ) -> ReceiptOutcome: ...

    async def receipts(
        self, *, message_id: str | None = None, unmatched: bool = False
    ) -> list[ReceiptRow]: ...

    async def claim_nonce(self, nonce: str, *, now: datetime, ttl: float) -> bool: ...

    async def forget_nonce(self, nonce: str) -> None: ...

    # policy facts
    async def last_sent_at(self, number: str, rule: str) -> datetime | None: ...

    async def count_sent_since(self, number: str | None, since: datetime) -> int: ...

    async def policy_facts(self, number: str, rule: str) -> PolicyFacts: ...

    async def sent_since(self, since: datetime) -> list[tuple[str, str, datetime]]: ...

    async def segments_sent_since(
        self, since: datetime
    ) -> list[tuple[str, str, str, int, datetime]]: ...

    async def is_opted_out(self, number: str) -> bool: ...

    async def opt_out(self, number: str, *, source: str, now: datetime | None = None) -> None: ...

    async def opt_in(self, number: str, *, source: str = "unknown") -> bool: ...

    async def is_dnd(self, number: str) -> bool: ...

    async def set_language(self, number: str, language: str, *, source: str,
                           now: datetime | None = None) -> None: ...

    async def language_preferences(self) -> dict[str, str]: ...

    async def add_dnd(
        self, numbers: Iterable[str], *, source: str, now: datetime | None = None
    ) -> int: ...

    async def remove_dnd(self, number: str, *, source: str = "unknown") -> bool: ...

    async def list_numbers(self, which: str, *, limit: int = 1000) -> list[ListEntry]: ...

    async def list_history(self, number: str | None = None, *, limit: int = 100
                           ) -> list[ListEvent]: ...

    async def import_dnd_csv(
        self, path: str | Path, *, region: str | None = None, source: str | None = None
    ) -> ImportResult: ...

    # replies, links
    async def add_reply(
        self,
        sms: InboundSms,
        *,
        message_id: str | None = None,
        keyword: str | None = None,
        action: str | None = None,
        sentiment: float | None = None,
        rating: int | None = None,
    ) -> int: ...

    async def replies_to(self, message_ids: Sequence[str]) -> list[ReplyRow]: ...

    async def add_link(
        self, code: str, url: str, *, message_id: str | None, now: datetime | None = None
    ) -> None: ...

    async def resolve_link(self, code: str) -> LinkRow | None: ...

    async def add_click(
        self, code: str, *, at: datetime | None = None, user_agent: str | None = None
    ) -> None: ...
