"""The store's row types: what every backend (SQLite, PostgreSQL) reads and writes, as frozen values.

The seams that consumers depend on (and ``Store``, their union) are in ``agent.store.seams``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from agent.models import (
    CallRecord,
    Decision,
    MessageState,
    RecipientKind,
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
    updated_at: datetime  # SQLite (schema 15): the latest of the times above it but the due ones
    pbx: str = "default"  # the PBX of the call it was decided for


#: What ``transition`` may set on a message besides its state, reason and detail.
TRANSITION_FIELDS = frozenset({
    "attempts", "error_code", "queued_at", "submitted_at", "final_at", "next_attempt_at",
    "submitting_since", "expires_at", "hangup_to_submit_ms", "gateway",
})


def check_transition_fields(fields: Collection[str]) -> None:
    """Refuse a ``transition`` that would set anything else (a caller's typo, not data)."""
    unknown = set(fields) - TRANSITION_FIELDS
    if unknown:
        raise ValueError(f"transition: unknown message fields {sorted(unknown)}")


def message_from_row(r: Any, smsc_ids: Sequence[str],
                     when: Callable[[Any], datetime | None] | None = None, *,
                     key: str | None = None) -> MessageRow:
    """A stored message row (read by column name: sqlite3.Row, asyncpg.Record) as a MessageRow,
    the same for both stores: ``smsc_ids`` as the backend decoded them, its times through
    ``when`` (None: the driver gives datetimes already). ``key``: the idempotency key of a row
    that stores only its digest, and no ``updated_at`` (SQLite since schema 15): that is then
    the latest of the row's own times."""
    t = when or _as_is
    if key is None:
        key, updated = r["idempotency_key"], t(r["updated_at"])
    else:
        updated = max(x for c in ("created_at", "queued_at", "submitting_since", "submitted_at",
                                  "final_at") if (x := t(r[c])) is not None)
    return MessageRow(
        id=r["id"],
        idempotency_key=key,
        call_id=r["call_id"],
        rule=r["rule"],
        trigger=Trigger(r["trigger"]),
        recipient_kind=RecipientKind(r["recipient_kind"]),
        number=r["number"],
        template=r["template"],
        gateway=r["gateway"],
        sender_id=r["sender_id"],
        text=r["text"],
        encoding=r["encoding"],
        segments=r["segments"],
        category=r["category"],
        dlt_template_id=r["dlt_template_id"],
        dlt_entity_id=r["dlt_entity_id"],
        state=MessageState(r["state"]),
        reason=r["reason"],
        detail=r["detail"],
        attempts=r["attempts"],
        smsc_ids=tuple(smsc_ids),
        error_code=r["error_code"],
        created_at=t(r["created_at"]),
        queued_at=t(r["queued_at"]),
        submitted_at=t(r["submitted_at"]),
        final_at=t(r["final_at"]),
        next_attempt_at=t(r["next_attempt_at"]),
        submitting_since=t(r["submitting_since"]),
        expires_at=t(r["expires_at"]),
        call_ended_at=t(r["call_ended_at"]),
        hangup_to_submit_ms=r["hangup_to_submit_ms"],
        updated_at=updated,
        pbx=r["pbx"],
    )


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One decision as the policies left it, to be written by ``Store.record_call``.
    ``claim_via``: a queued row the dispatcher will submit at once through that gateway (it
    holds a window slot for it): a store that can claims its first attempt in the same
    transaction (as ``claim_for_submit``), saving the submit a second commit. A store that does
    not returns it unclaimed, and the dispatcher claims it as any other row."""

    decision: Decision
    state: MessageState
    reason: str | None = None
    detail: str | None = None
    next_attempt_at: datetime | None = None
    expires_at: datetime | None = None
    claim_via: str | None = None


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
    # texts to this number in its audience within the per-number window (``sent_since``)
    sent_to_number: int = 0


@dataclass(frozen=True, slots=True)
class PeerSend:
    """A text another agent sharing the database wrote to go out (``sends_by_others``): what
    this agent's rate limits and spend totals count of it."""

    id: str
    recipient_kind: str
    number: str
    rule: str
    gateway: str
    segments: int
    at: datetime  # when its row was written


@dataclass(frozen=True, slots=True)
class FactsAsk:
    """The ``PolicyFacts`` one decision needs (the arguments of ``policy_facts``)."""

    number: str
    rule: str
    sent_since: datetime | None = None
    agents: bool = False


#: What ``Outbox.decide_and_record`` calls with the facts of each ask (None where no facts were
#: asked): the rows the policies make of the decisions, in the same order.
Decide = Callable[[Sequence["PolicyFacts | None"]], list[NewMessage]]
#: What ``Outbox.decide_and_record`` may call on the loop once its rows are committed, with what
#: it returns: the decided rows, and each row as written with whether it is new.
Committed = Callable[[tuple[list[NewMessage], list[tuple["MessageRow", bool]]]], None]


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
