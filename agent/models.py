"""Frozen value types shared by every layer: call records, SMS to send, results, receipts."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


class Trigger(enum.StrEnum):
    CALL_COMPLETED = "call_completed"
    CALL_CONNECTED = "call_connected"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class Disposition(enum.StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    ABANDONED = "abandoned"
    BUSY = "busy"
    FAILED = "failed"
    VOICEMAIL = "voicemail"


class HangupBy(enum.StrEnum):
    CALLER = "caller"
    AGENT = "agent"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call, keyed by Asterisk's Linkedid. Every field is a merge tag in templates."""

    call_id: str
    trigger: Trigger = Trigger.CALL_COMPLETED
    caller: str = ""  # E.164 when it parses, else raw; "anonymous" when withheld
    caller_name: str | None = None
    did: str | None = None
    direction: Direction = Direction.INBOUND
    queue: str | None = None
    agent: str | None = None  # extension (e.g. "2001") or interface
    agent_name: str | None = None
    agent_number: str | None = None  # agent's mobile, from rules.yaml's directory
    disposition: Disposition = Disposition.FAILED
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_seconds: float = 0.0
    talk_seconds: float = 0.0
    duration_seconds: float = 0.0
    hangup_cause: int | None = None
    hangup_by: HangupBy | None = None
    tags: tuple[str, ...] = ()
    vars: Mapping[str, str] = field(default_factory=dict)
    language: str | None = None
    pbx: str = "default"  # the PBX the call was on (settings AFTERCALL_PBX / --pbx)
    #: Which rule decided ``direction`` and how (agent.calls.pbx.Origin.how), for explain.
    direction_by: str | None = None
    # The agent's wrap-up (disposition) code, e.g. SALE: often given after the hangup
    # (agent.calls.hooks); None when none came (in time).
    wrapup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CallRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown call record fields: {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = dict(d)
        for k in ("started_at", "answered_at", "ended_at"):
            if isinstance(kw.get(k), str):
                kw[k] = datetime.fromisoformat(kw[k])
        if "trigger" in kw:
            kw["trigger"] = Trigger(kw["trigger"])
        if "direction" in kw:
            kw["direction"] = Direction(kw["direction"])
        if "disposition" in kw:
            kw["disposition"] = Disposition(kw["disposition"])
        if kw.get("hangup_by") is not None:
            kw["hangup_by"] = HangupBy(kw["hangup_by"])
        if "tags" in kw:
            kw["tags"] = tuple(kw["tags"])
        if "vars" in kw:
            kw["vars"] = dict(kw["vars"] or {})
        return cls(**kw)


class MessageState(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    PARTIALLY_DELIVERED = "partially_delivered"  # some parts of a long text never arrived
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    AMBIGUOUS = "ambiguous"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {
    MessageState.DELIVERED,
    MessageState.PARTIALLY_DELIVERED,
    MessageState.UNDELIVERED,
    MessageState.EXPIRED,
    MessageState.FAILED,
    MessageState.SUPPRESSED,
}


class SuppressReason(enum.StrEnum):
    OPT_OUT = "opt_out"
    DND = "dnd"
    COOLDOWN = "cooldown"
    INVALID_NUMBER = "invalid_number"
    QUIET_HOURS = "quiet_hours"
    RATE_LIMITED = "rate_limited"
    COUNTRY_NOT_ALLOWED = "country_not_allowed"
    MAX_AGE = "max_age"
    DRY_RUN = "dry_run"
    TEMPLATE_ERROR = "template_error"
    TOO_LONG = "too_long"  # the rendered text needs more segments than max_segments allows
    SPEND_CAP = "spend_cap"  # sending it would pass a daily/monthly spend cap (sms/spend.py)
    # Deferred until send.delay / at: next_open (rules/schedule.py); the second kind is
    # cancelled (called_again) by a newer answered call from the number (unless.called_again).
    SCHEDULED = "scheduled"
    SCHEDULED_UNLESS_CALLED = "scheduled_unless_called_again"
    CALLED_AGAIN = "called_again"


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """What a gateway is asked to send. ``message_id`` is ours (the outbox row id); HTTP presets
    put it in their callback URL so receipts find the row without the SMSC id."""

    message_id: str
    to: str  # E.164 with leading "+"
    sender: str
    text: str
    request_receipt: bool = True
    tlvs: Mapping[int, bytes] = field(default_factory=dict)  # operator TLVs (e.g. India DLT)
    dlt_template_id: str | None = None
    dlt_entity_id: str | None = None
    # Worked out once when the text was rendered, carried to the gateway rather than redone:
    # "GSM-7" or "UCS-2", and the number of SMS parts. None: not known (work it out).
    encoding: str | None = None
    segments: int | None = None
    expires_at: datetime | None = None  # not worth delivering after this (the rule's max_age)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    message_id: str
    smsc_ids: tuple[str, ...]  # one per segment for SMPP; usually one for HTTP gateways
    segments: int


class ReceiptState(enum.StrEnum):
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    ACCEPTED = "accepted"  # intermediate (e.g. ENROUTE/ACCEPTD/BUFFERED)
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self not in (ReceiptState.ACCEPTED, ReceiptState.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery report. ``smsc_id`` matches a SubmitResult id; HTTP presets may also carry
    our own ``message_id``."""

    gateway: str
    state: ReceiptState
    smsc_id: str | None = None
    message_id: str | None = None
    error_code: str | None = None
    done_at: datetime | None = None
    raw: str = ""


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A mobile-originated message (a reply)."""

    gateway: str
    sender: str  # the handset, E.164 when it parses
    recipient: str  # our sender id / long number
    text: str
    received_at: datetime
    # False when nothing proves who sent it (a bearer-token URL from any address): such a
    # reply can't opt a number back in.
    authenticated: bool = True


class RecipientKind(enum.StrEnum):
    CALLER = "caller"
    AGENT = "agent"
    FIXED = "fixed"


class ShortLink(str):
    """A tracked short URL as rendered into a text (``str``), knowing its ``code`` and the
    ``url`` it leads to, so a decision can carry the links its text holds."""

    __slots__ = ("code", "url")
    code: str
    url: str

    def __new__(cls, short_url: str, *, code: str, url: str) -> ShortLink:
        self = super().__new__(cls, short_url)
        self.code = code
        self.url = url
        return self


def idempotency_key(pbx: str, call_id: str, rule: str, recipient: str,
                    number: str | None) -> str:
    """A decision's idempotency key (``Decision.idempotency_key``) from its parts: a stored row
    that keeps only a digest of it (SQLite, schema 15) is matched against a new decision by its
    columns through this."""
    key = f"{call_id}|{rule}|{recipient}|{number or '-'}"
    return key if pbx == "default" else f"{pbx}|{key}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rule engine decided for one recipient of one call. Policies (opt-out, DND,
    cooldown, quiet hours, rate limits, max_age) are applied afterwards by the dispatcher;
    ``suppress`` is set here only for reasons the engine itself knows (invalid_number,
    template_error)."""

    call_id: str
    rule: str
    trigger: Trigger
    recipient: RecipientKind
    number: str | None  # E.164, None when the recipient has no usable number
    template: str
    gateway: str
    sender_id: str
    text: str | None  # rendered; None when rendering failed
    encoding: str = "GSM-7"
    segments: int = 1
    category: str = "transactional"
    dlt_template_id: str | None = None
    dlt_entity_id: str | None = None
    cooldown_seconds: float | None = None
    quiet_hours: tuple[str, str, str] | None = None  # (from "HH:MM", to "HH:MM", action defer|drop|send)
    timezone: str = "UTC"
    max_age_seconds: float | None = None
    suppress: SuppressReason | None = None
    detail: str | None = None  # human reason, e.g. the template error or why the number is invalid
    call_ended_at: datetime | None = None
    links: tuple[ShortLink, ...] = ()  # tracked links in ``text``: written with its row
    pbx: str = "default"  # the call's PBX (CallRecord.pbx): several may share one database
    # Which language variant of the template was chosen and why (explain), when it has some.
    language: str | None = None
    # The rule's own spend caps (daily, monthly) in defaults.currency; None: no rule cap.
    spend_caps: tuple[Decimal | None, Decimal | None] | None = None
    # Not before this (UTC): send.delay / at: next_open. max_age counts from it.
    not_before: datetime | None = None
    unless_called_again: bool = False  # a newer answered call from the number cancels it

    @property
    def idempotency_key(self) -> str:
        """One row per (PBX, call, rule, recipient), whichever agent decides it first. The
        ``default`` PBX keeps the form keys had before PBXs were named, so upgrading does not
        re-key calls already recorded (a replayed one would be texted again)."""
        return idempotency_key(self.pbx, self.call_id, self.rule, self.recipient.value,
                               self.number)


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What one rule said about a call when it was decided: matched, or the condition that
    failed (the engine's RuleTrace without the decisions, which are the message rows)."""

    rule: str
    matched: bool
    reason: str | None = None  # the first condition that failed; None when matched
    skipped: tuple[str, ...] = ()  # recipients an earlier rule had already taken
    trigger: Trigger = Trigger.CALL_COMPLETED
