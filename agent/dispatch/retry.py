"""Retry timing (RetryPolicy, GATEWAY_UNAVAILABLE) and the pure helpers the dispatcher shares."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.backoff import backoff_delay
from agent.sms.numbers import mask

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def mask_number(number: str | None) -> str:
    """``+919812345678`` -> ``+91******5678`` (the one masking rule: agent.sms.numbers.mask)."""
    return mask(number) if number else "-"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a message is retried after a GatewayTemporaryError (the delays
    follow ``agent.backoff``)."""

    initial: float = 1.0  # seconds before the 2nd attempt
    max_backoff: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2  # up to this fraction off each delay: a burst does not retry in lockstep
    max_attempts: int | None = 10
    #: While the gateway itself is unreachable (not bound, connection refused or lost before
    #: the submit went out) the message never reached an SMSC: such attempts do not count
    #: towards ``max_attempts`` (expiry bounds them) and wait at most this long, so a backlog
    #: starts draining within seconds of the gateway's return however long it was down.
    unavailable_max_backoff: float = 5.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random, *,
              unavailable: bool = False) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); capped at
        ``unavailable_max_backoff`` while the gateway itself is unreachable."""
        cap = min(self.max_backoff, self.unavailable_max_backoff) if unavailable \
            else self.max_backoff
        return backoff_delay(max(0, attempt - 1), self.initial, cap,
                             factor=self.multiplier, jitter=self.jitter, rand=rand)


#: GatewayTemporaryError reasons that mean the submit never left this host.
GATEWAY_UNAVAILABLE = frozenset({"not_bound", "connect_failed", "connection_lost",
                                 "connection_failed"})
