"""Capped exponential backoff with jitter: the one rule for every retry the agent makes (AMI
reconnects, SMPP rebinds and throttled submits, the dispatcher's message retries)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


def backoff_delay(attempt: int, initial: float, maximum: float, *, factor: float = 2.0,
                  jitter: float = 0.5, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): ``initial *
    factor**attempt`` capped at ``maximum``, of which a random part of up to ``jitter`` is
    taken off. Jitter spreads a crowd (every client of an SMSC or PBX that just restarted) so
    it does not come back in lockstep; taking it off the top keeps the cap a cap, and with
    ``jitter`` < 1 a retry never comes near zero delay."""
    d = min(maximum, initial * factor ** min(attempt, 64))
    return d * (1 - jitter + jitter * rand())


@dataclass
class Backoff:
    """A reconnect schedule (the AMI client's): ``backoff_delay`` with the attempt count kept."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    rng: Callable[[], float] = random.random
    attempt: int = 0

    def next(self) -> float:
        delay = backoff_delay(self.attempt, self.initial, self.maximum, factor=self.factor,
                              rand=self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
