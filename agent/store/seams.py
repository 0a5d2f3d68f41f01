"""The store's seams: one Protocol per kind of consumer, and ``Store``, their union.

A consumer depends on the seam it uses (the dispatcher on ``DispatchStore``, the record loop
on ``CallLog``, webhooks on ``Engagement``, the calls view on ``CallsView``, list management
on ``ListAdmin``, reports on ``ReportSource``); only the composition root holds a whole
``Store``. The read-side seams (``CallReads``, ``MessageLog``, ``ReplyReads``, ``ListAdmin``)
are parts of the write-side ones, so a store that honours those honours these. Both backends
(``store.sqlite``, ``store.postgres``) implement every seam; ``tests/store/test_seams.py``
checks that they do, member by member. All SQL stays behind these seams, inside
``agent/store/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent.models import (
    CallRecord,
    Decision,
    InboundSms,
    MessageState,
    Receipt,
    RuleOutcome,
    Trigger,
)
from agent.store.base import (
    CallFilter,
    CallSummary,
    Committed,
    Decide,
    FactsAsk,
    ImportResult,
    LinkRow,
    ListEntry,
    ListEvent,
    MessageEvent,
    MessageFilter,
    MessageRow,
    NewMessage,
    PolicyFacts,
    ReceiptOutcome,
    ReceiptRow,
    ReplyRow,
    ReportData,
)

T = TypeVar("T")


class Lifecycle(Protocol):
    """Open, healthy, closed: what the composition root and /healthz ask of any store."""

    @property
    def healthy(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    async def close(self) -> None: ...

    async def health(self) -> bool: ...


class CallReads(Protocol):
    """Calls found by filters, and what each rule said about one: what the calls view reads."""

    async def list_calls(self, filters: CallFilter) -> list[CallSummary]: ...

    async def rule_outcomes(self, call_id: str, *, pbx: str) -> list[RuleOutcome]: ...


class CallLog(CallReads, Protocol):
    """Call records and what the rules made of them: the record loop, CDR recovery, wrap-up holds, the calls view."""

    async def save_call(self, record: CallRecord, *, now: datetime | None = None) -> None: ...

    async def get_call(self, call_id: str, *, pbx: str) -> CallRecord | None:
        """The call ``call_id`` of PBX ``pbx``: a call is (PBX, call id), since PBXs without
        Asterisk's systemname number their calls alike."""

    async def newest_call_end(self, pbx: str | None = None) -> datetime | None: ...

    async def record_rule_outcomes(
        self, call_id: str, trigger: Trigger, outcomes: Sequence[RuleOutcome], *, now: datetime,
        pbx: str,
    ) -> None: ...


class MessageLog(Protocol):
    """Message rows as the log shows them: by filter, each with its history and receipts."""

    async def list_messages(self, filters: MessageFilter | None = None) -> list[MessageRow]: ...

    async def message_events(self, message_id: str) -> list[MessageEvent]: ...

    async def receipts(
        self, *, message_id: str | None = None, unmatched: bool = False
    ) -> list[ReceiptRow]: ...


class Outbox(MessageLog, Protocol):
    """The message rows from decision to final state: the record path's one write (``record_call``), the dispatcher's
    transitions, receipts, and the SMS log read back."""

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

    async def decide_and_record(
        self, call: CallRecord | None, asks: Sequence[FactsAsk | None], decide: Decide, *,
        now: datetime, outcomes: Sequence[RuleOutcome] | None = None,
        committed: Committed | None = None,
    ) -> tuple[list[NewMessage], list[tuple[MessageRow, bool]]]:
        """``policy_facts`` for each ask, ``decide(facts)`` -> the rows, then ``record_call``
        with them: the rows and what was written. A store may do it all in its one write
        transaction, the facts read there (SQLite: one hop into the writer thread and one
        back, and the facts include every row committed or written before in that
        transaction). ``decide`` may run in the store's thread: it must touch nothing the
        event loop changes unguarded. If it raised, or the write failed, this raises
        (StoreError for the store's own failures). ``committed``: a store may call it on the
        loop with what this returns as soon as the rows are committed, before this returns
        (SQLite: a loop turn sooner); the caller must not count on it being called."""
        ...

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

    async def find_by_smsc_id(self, gateway: str, smsc_id: str) -> MessageRow | None: ...

    async def apply_receipt(
        self, receipt: Receipt, *, now: datetime | None = None
    ) -> ReceiptOutcome: ...


class ListAdmin(Protocol):
    """The opt-out and DND lists as an operator manages them: add, remove, list, import, and
    who changed what."""

    async def opt_out(self, number: str, *, source: str, now: datetime | None = None) -> None: ...

    async def opt_in(self, number: str, *, source: str = "unknown") -> bool: ...

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


class Suppressions(ListAdmin, Protocol):
    """Who must not be texted, or not yet: opt-out and DND lists, per-number language, and the facts policies
    count (last sent, sent since, spend)."""

    async def policy_facts(self, number: str, rule: str, *, sent_since: datetime | None = None,
                           agents: bool = False) -> PolicyFacts: ...

    async def last_sent_at(self, number: str, rule: str) -> datetime | None: ...

    async def count_sent_since(self, number: str | None, since: datetime) -> int: ...

    async def sent_since(self, since: datetime) -> list[tuple[str, str, datetime]]: ...

    async def segments_sent_since(
        self, since: datetime
    ) -> list[tuple[str, str, str, int, datetime]]: ...

    async def is_opted_out(self, number: str) -> bool: ...

    async def is_dnd(self, number: str) -> bool: ...

    async def set_language(self, number: str, language: str, *, source: str,
                           now: datetime | None = None) -> None: ...

    async def language_preferences(self) -> dict[str, str]: ...


class ReplyReads(Protocol):
    """The replies to some messages, as the calls view shows them."""

    async def replies_to(self, message_ids: Sequence[str]) -> list[ReplyRow]: ...


class Engagement(ReplyReads, Protocol):
    """What recipients did with a text: replies (and the message each answers), tracked links and their clicks, and
    the nonces that make a webhook count once."""

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

    async def latest_message_to(self, number: str) -> MessageRow | None: ...

    async def add_link(
        self, code: str, url: str, *, message_id: str | None, now: datetime | None = None
    ) -> None: ...

    async def resolve_link(self, code: str) -> LinkRow | None: ...

    async def add_click(
        self, code: str, *, at: datetime | None = None, user_agent: str | None = None
    ) -> None: ...

    async def claim_nonce(self, nonce: str, *, now: datetime, ttl: float) -> bool: ...

    async def forget_nonce(self, nonce: str) -> None: ...


class CallsView(CallReads, MessageLog, ReplyReads, Protocol):
    """The calls view's (agent.web.calls): calls, their messages with history and receipts,
    and the replies to them."""


class DispatchStore(Outbox, Suppressions, Protocol):
    """The dispatcher's: the outbox, and the facts its policies check before a send."""


class ReplyStore(CallLog, Suppressions, Engagement, Protocol):
    """The reply handler's: the call a reply's message was for, the lists a keyword changes,
    and the reply itself."""


class Store(Lifecycle, CallLog, Outbox, Suppressions, Engagement, Protocol):
    """Durable state of the agent, every seam at once: for the composition root, which hands
    each part the seam it uses. Writes raise StoreError when they cannot be recorded;
    ``healthy`` is False from such a failure until the next successful write."""


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
