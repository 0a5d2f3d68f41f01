"""The simulated SMSC's state, shared by its SMPP and HTTP faces: admission, reassembly, DLRs."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# SMPP statuses the core itself refuses with; the HTTP face maps them to 429 / 4xx.
ESME_RTHROTTLED = 0x58

# Receipt `err:` field per final stat: loosely what operators send (000 = no error).
_ERR_FOR_STAT = {
    "DELIVRD": "000",
    "UNDELIV": "001",
    "EXPIRED": "002",
    "REJECTD": "003",
    "DELETED": "004",
    "UNKNOWN": "005",
    "ACCEPTD": "000",
    "ENROUTE": "000",
}
KNOWN_STATS = frozenset(_ERR_FOR_STAT)

MoListener = Callable[[str, str, str], Awaitable[None]]


@dataclass
class FaultConfig:
    """What the simulated SMSC does wrong. Mutable on purpose: tests flip faults mid-run."""

    refuse_bind: bool = False
    throttle_tps: float | None = None  # refuse submits above this rate (ESME_RTHROTTLED / 429)
    error_for: list[tuple[str, int]] = field(default_factory=list)  # (regex on dest, status)
    never_respond: bool = False  # black hole: accept bytes, never answer
    drop_after: int | None = None  # drop each connection after answering N submits on it
    receipt_delay: float = 0.05
    outcome_mix: dict[str, float] = field(default_factory=lambda: {"DELIVRD": 1.0})
    duplicate_receipts: bool = False
    out_of_order_receipts: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field; called on construction and after updates."""
        if self.throttle_tps is not None and self.throttle_tps <= 0:
            raise ValueError("throttle_tps: must be > 0 or null")
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError("drop_after: must be >= 0 or null")
        if self.receipt_delay < 0:
            raise ValueError("receipt_delay: must be >= 0")
        if not self.outcome_mix or any(w < 0 for w in self.outcome_mix.values()):
            raise ValueError("outcome_mix: needs at least one non-negative weight")
        if sum(self.outcome_mix.values()) <= 0:
            raise ValueError("outcome_mix: weights must not all be zero")
        unknown = set(self.outcome_mix) - KNOWN_STATS
        if unknown:
            known = sorted(KNOWN_STATS)
            raise ValueError(f"outcome_mix: unknown stat {sorted(unknown)}; use {known}")
        for i, (pattern, status) in enumerate(self.error_for):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"error_for[{i}]: bad regex {pattern!r}: {exc}") from None
            if not 0 < int(status) <= 0xFFFFFFFF:
                raise ValueError(f"error_for[{i}]: status must be a non-zero SMPP status")


@dataclass(frozen=True)
class SimMessage:
    """One complete (reassembled) message as the handset would show it."""

    smsc_id: str  # the id given to its first part
    channel: str  # "smpp" or "http"
    source: str
    dest: str
    text: str
    parts: int
    tlvs: dict[int, bytes]
    received_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "smsc_id": self.smsc_id,
            "channel": self.channel,
            "source": self.source,
            "dest": self.dest,
            "text": self.text,
            "parts": self.parts,
            "tlvs": {f"0x{tag:04X}": value.hex() for tag, value in self.tlvs.items()},
            "received_at": self.received_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimMessage:
        return cls(
            smsc_id=str(d["smsc_id"]),
            channel=str(d["channel"]),
            source=str(d["source"]),
            dest=str(d["dest"]),
            text=str(d["text"]),
            parts=int(d["parts"]),
            tlvs={int(tag, 16): bytes.fromhex(v) for tag, v in d.get("tlvs", {}).items()},
            received_at=datetime.fromisoformat(d["received_at"]),
        )


def read_record(path: str | Path) -> Iterator[SimMessage]:
    """Messages a simulator (possibly another process) appended to its record file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield SimMessage.from_dict(json.loads(line))


@dataclass
class _Pending:
    first_id: str
    total: int
    parts: dict[int, str] = field(default_factory=dict)
    tlvs: dict[int, bytes] = field(default_factory=dict)


class SimCore:
    """State of one simulated SMSC. Not thread-safe: the SMPP and HTTP faces share one loop."""

    def __init__(
        self,
        faults: FaultConfig | None = None,
        *,
        record_path: str | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults or FaultConfig()
        self.messages: list[SimMessage] = []
        self.mo_listeners: list[MoListener] = []
        self.parts_received = 0
        self._record_path = record_path
        self._rng = random.Random(seed)
        self._clock = clock
        self._next_id = 0
        self._pending: dict[tuple[str, str, str, int, int], _Pending] = {}
        self._tokens = 0.0
        self._token_at: float | None = None
        self._changed = asyncio.Event()

    # -- admission ---------------------------------------------------------------------------

    def admit(self, dest: str) -> int:
        """0 to accept a submit to ``dest``, else the SMPP command_status to refuse it with."""
        for pattern, status in self.faults.error_for:
            if re.search(pattern, dest):
                return int(status)
        tps = self.faults.throttle_tps
        if tps is None:
            self._token_at = None
            return 0
        # Token bucket holding one second's worth, so a burst at the start is allowed as
        # real SMSCs do, and the long-run rate is exactly tps.
        now = self._clock()
        burst = max(1.0, tps)
        if self._token_at is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + (now - self._token_at) * tps)
        self._token_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0
        return ESME_RTHROTTLED

    # -- submits and reassembly -------------------------------------------------------------

    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self._next_id:010X}"

    def accept_part(
        self,
        *,
        channel: str,
        source: str,
        dest: str,
        text: str,
        concat: tuple[int, int, int] | None,
        tlvs: dict[int, bytes] | None = None,
    ) -> str:
        """Record one part; ``concat`` is (reference, total, sequence) from the UDH. Returns the
        new SMSC message id. A message is appended to ``messages`` once all its parts are in."""
        smsc_id = self._new_id()
        self.parts_received += 1
        if concat is None or concat[1] <= 1:
            self._complete(smsc_id, channel, source, dest, text, 1, dict(tlvs or {}))
            return smsc_id
        ref, total, seq = concat
        key = (channel, source, dest, ref, total)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(first_id=smsc_id, total=total)
        if seq == 1 or not pending.tlvs:
            pending.tlvs = dict(tlvs or pending.tlvs)
        if seq == 1:
            pending.first_id = smsc_id
        pending.parts[seq] = text
        if len(pending.parts) >= total:
            del self._pending[key]
            full = "".join(pending.parts[i] for i in sorted(pending.parts))
            self._complete(pending.first_id, channel, source, dest, full, total, pending.tlvs)
        return smsc_id

    def _complete(
        self, smsc_id: str, channel: str, source: str, dest: str, text: str, parts: int,
        tlvs: dict[int, bytes],
    ) -> None:
        msg = SimMessage(
            smsc_id=smsc_id, channel=channel, source=source, dest=dest, text=text, parts=parts,
            tlvs=tlvs, received_at=datetime.now(UTC),
        )
        self.messages.append(msg)
        if self._record_path:
            with open(self._record_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(msg.to_dict(), ensure_ascii=False) + "\n")
        self._changed.set()

    async def wait_for_messages(self, n: int, timeout: float) -> list[SimMessage]:
        """All messages once there are at least ``n``; TimeoutError otherwise."""

        async def _wait() -> None:
            while len(self.messages) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return list(self.messages)

    # -- receipts ----------------------------------------------------------------------------

    def _pick_stat(self) -> str:
        stats = list(self.faults.outcome_mix)
        weights = [self.faults.outcome_mix[s] for s in stats]
        return self._rng.choices(stats, weights=weights, k=1)[0]

    def receipt_plan(self, smsc_id: str) -> list[tuple[float, str, str]]:
        """[(delay_seconds, stat, err)] to send for one accepted part, in sending order."""
        f = self.faults
        stat = self._pick_stat()
        delay = f.receipt_delay
        if f.out_of_order_receipts:
            # Jitter so receipts of consecutive messages overtake each other, and send the
            # intermediate ENROUTE after the final state, as badly behaved SMSCs do.
            delay = delay * self._rng.uniform(0.2, 1.8)
            plan = [(delay, stat, _ERR_FOR_STAT[stat]), (delay * 1.5 + 0.001, "ENROUTE", "000")]
        else:
            plan = [(delay, stat, _ERR_FOR_STAT[stat])]
        if f.duplicate_receipts:
            plan.append((plan[0][0] * 2 + 0.001, stat, _ERR_FOR_STAT[stat]))
        plan.sort(key=lambda p: p[0])
        return plan

    # -- mobile originated -------------------------------------------------------------------

    async def inject_mo(self, sender: str, recipient: str, text: str) -> int:
        """Hand a reply to every listener (bound SMPP sessions, HTTP callbacks); returns how
        many listeners took it."""
        delivered = 0
        for listener in list(self.mo_listeners):
            await listener(sender, recipient, text)
            delivered += 1
        return delivered
