"""What happens next to one outbox row: ``next_step(row, outcome, now, policy, health)``, pure.

The shell (``agent.dispatch.sender``) observes something about a row (it is due, the gateway
could not be reached, the submit failed for a while, for good, or in a way that leaves it
unknown) and asks here what to do; the answer is a frozen step it performs as one store
transition, one log line and one metric. Retry, failover and expiry arithmetic lives here
alone, so it is tested as a table, without a loop or a database (h11's transition table).
No asyncio and no store here: a row is anything with the ``Row`` attributes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

from agent.dispatch.retry import GATEWAY_UNAVAILABLE, RetryPolicy
from agent.models import MessageState


class Row(Protocol):
    """What a decision reads of an outbox row (``agent.store.base.MessageRow`` has it)."""

    @property
    def state(self) -> MessageState: ...
    @property
    def gateway(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def reason(self) -> str | None: ...


# ---- what the shell observed --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """The row's time has come. ``opted_out``: for a deferred row, whether its number opted
    out meanwhile (hours may have passed since the decision)."""

    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The gateway did not become ready in time: nothing left this host."""

    via: str
    detail: str
    reason: str = "not_bound"
    code: int | str | None = None


@dataclass(frozen=True, slots=True)
class TemporaryFailure:
    """The gateway said try again later (``retry_after``: when it asked us to, in seconds)."""

    via: str
    detail: str
    reason: str = "error"
    code: int | str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """The gateway refused the message for good."""

    via: str
    detail: str
    reason: str = "error"
    code: int | str | None = None


@dataclass(frozen=True, slots=True)
class UnknownOutcome:
    """The submit may have reached the SMSC (timeout after sending, a gateway bug)."""

    via: str
    detail: str
    reason: str = "gateway_error"
    code: int | str | None = None


Outcome = Due | Unreachable | TemporaryFailure | PermanentFailure | UnknownOutcome


# ---- the steps ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submit:
    """Claim the row and submit it through ``gateway``."""

    gateway: str


@dataclass(frozen=True, slots=True)
class Release:
    """A deferred row's quiet hours are over: queue it now, worth sending until ``expires_at``."""

    expires_at: datetime
    detail: str = "quiet hours ended"
    state: MessageState = MessageState.QUEUED
    from_state: MessageState = MessageState.DEFERRED


@dataclass(frozen=True, slots=True)
class Retry:
    """Queue it again for ``at`` through ``gateway`` (the backup, when ``failover``).
    ``first_failover``: this is the row's first switch to the backup (made at once)."""

    gateway: str
    at: datetime
    delay: float
    detail: str
    code: int | str | None = None
    failover: bool = False
    first_failover: bool = False
    state: MessageState = MessageState.QUEUED
    from_state: MessageState = MessageState.QUEUED

    @property
    def reason(self) -> str:
        return "failover" if self.failover else "retry"


@dataclass(frozen=True, slots=True)
class Final:
    """The one shape of a final step: the row leaves the outbox in ``state`` (set by each kind
    below, with the event its log line is named), from ``from_state``, for ``reason``."""

    reason: str
    detail: str
    code: int | str | None = None
    from_state: MessageState = MessageState.QUEUED
    state: ClassVar[MessageState]
    event: ClassVar[str]
    warn: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Fail(Final):
    """Final: never sent."""

    state = MessageState.FAILED
    event = "sms_failed"


@dataclass(frozen=True, slots=True)
class Expire(Final):
    """Final: not submitted while it was still worth sending."""

    state = MessageState.EXPIRED
    event = "sms_expired"


@dataclass(frozen=True, slots=True)
class Ambiguous(Final):
    """Final until an operator's verdict: the SMSC may have it, so it is never resent."""

    state = MessageState.AMBIGUOUS
    event = "sms_ambiguous"


@dataclass(frozen=True, slots=True)
class Suppress(Final):
    """Final: a policy says this text must not go (a policy's refusal, not a fault: logged
    at info)."""

    state = MessageState.SUPPRESSED
    event = "sms_suppressed"
    warn = False


Step = Submit | Release | Retry | Fail | Expire | Ambiguous | Suppress


# ---- the inputs that are not the row ------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The configured rules: which gateways exist, each one's backup, retry timing, expiry.
    ``rand`` draws the retry jitter (a fixed value in tests)."""

    gateways: frozenset[str]
    backups: Mapping[str, str] = field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    expiry: timedelta = timedelta(hours=1)
    rand: Callable[[], float] = random.random


@dataclass(frozen=True, slots=True)
class Health:
    """What is true now: the gateways that are up, and the rows already switched to their
    backup once (the first switch is immediate, later ones back off)."""

    healthy: frozenset[str]
    failed_over: frozenset[str] = frozenset()


# ---- the table ----------------------------------------------------------------------------


def route(gateway: str, policy: Policy, health: Health) -> str:
    """The gateway a submit goes through: the backup while the primary is down and it is up."""
    backup = policy.backups.get(gateway)
    if backup and gateway not in health.healthy and backup in health.healthy:
        return backup
    return gateway


def next_step(row: Row, outcome: Outcome, now: datetime, policy: Policy, health: Health,
              *, message_id: str = "") -> Step:
    """What to do with ``row`` after ``outcome`` at ``now``. ``message_id`` keys the row's
    failover memory in ``health.failed_over``."""
    match outcome:
        case Due(opted_out=opted_out):
            if row.gateway not in policy.gateways:
                return Fail("unknown_gateway", f"no gateway named {row.gateway!r} is configured",
                            from_state=row.state)
            if row.state is MessageState.DEFERRED:
                if opted_out:
                    return Suppress("opt_out", "recipient opted out while deferred",
                                    from_state=row.state)
                # A scheduled row keeps its own expiry (max_age from its scheduled time).
                expires = now + policy.expiry
                if row.expires_at is not None:
                    expires = min(expires, row.expires_at)
                if (row.reason or "").startswith("scheduled"):
                    return Release(expires_at=expires, detail="scheduled time reached")
                return Release(expires_at=expires)
            if row.expires_at is not None and now > row.expires_at:
                return Expire("expiry", f"not submitted before {row.expires_at.isoformat()}")
            return Submit(route(row.gateway, policy, health))
        case Unreachable(via=via, detail=detail, reason=reason, code=code):
            # Whatever the wait failed with, the message never left: an unreachable gateway.
            reason = reason if reason in GATEWAY_UNAVAILABLE else "not_bound"
            return _retry(row, via, detail, reason, code, None, now, policy, health, message_id)
        case TemporaryFailure(via=via, detail=detail, reason=reason, code=code,
                              retry_after=retry_after):
            return _retry(row, via, detail, reason, code, retry_after, now, policy, health,
                          message_id)
        case PermanentFailure(detail=detail, reason=reason, code=code):
            return Fail(reason, detail, code)
        case UnknownOutcome(detail=detail, reason=reason, code=code):
            return Ambiguous(reason, detail, code)
    raise TypeError(f"not an outcome: {outcome!r}")


def _retry(row: Row, via: str, detail: str, reason: str, code: int | str | None,
           retry_after: float | None, now: datetime, policy: Policy, health: Health,
           message_id: str) -> Step:
    retry = policy.retry
    # A gateway that cannot be reached never got the message: such tries count for nothing
    # (expiry bounds them) and wait briefly, so a backlog drains soon after it comes back.
    unavailable = reason in GATEWAY_UNAVAILABLE
    if retry.max_attempts is not None and row.attempts >= retry.max_attempts and not unavailable:
        return Fail("retries_exhausted", f"{row.attempts} attempts, last: {detail}", code)
    delay = retry.delay(row.attempts, policy.rand, unavailable=unavailable)
    if retry_after is not None:  # the gateway said when (HTTP 429/503 Retry-After)
        delay = max(delay, retry_after)
    target, first = via, False
    backup = policy.backups.get(via)
    if backup is not None and backup in health.healthy:
        target = backup
        if message_id not in health.failed_over:
            first, delay = True, 0.0
    at = now + timedelta(seconds=delay)
    if row.expires_at is not None and at > row.expires_at:
        return Expire("expiry", f"retry would be after expiry; last: {detail}", code)
    failover = target != via
    return Retry(target, at, delay, f"{via}: {detail}" + (f"; next via {target}" if failover
                                                          else ""),
                 code, failover=failover, first_failover=first)
