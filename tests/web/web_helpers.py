"""Helpers for the web tests: a fake gateway (the seam), a store filled through its public API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from agent.gateways.base import InboundHandler, ReceiptHandler
from agent.models import (
    Decision,
    InboundSms,
    MessageState,
    OutboundSms,
    Receipt,
    ReceiptState,
    RecipientKind,
    SubmitResult,
    Trigger,
)
from agent.store.sqlite import SqliteStore

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


@dataclass
class FakeGateway:
    """Accepts every submit and remembers it (implements the Gateway protocol)."""

    name: str
    healthy: bool = True
    window: int = 10
    accepted: list[OutboundSms] = field(default_factory=list)

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        return None

    async def close(self) -> None:
        return None

    async def wait_ready(self, timeout: float) -> None:
        return None

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        self.accepted.append(sms)
        return SubmitResult(sms.message_id, (f"{self.name}-{len(self.accepted)}",), 1)


BASE = Decision(
    call_id="1714554000.1", rule="support-followup", trigger=Trigger.CALL_COMPLETED,
    recipient=RecipientKind.CALLER, number="+919812345678", template="support_ticket",
    gateway="smsc", sender_id="ACMECO", text="Hi Asha, your ticket #42 is logged.",
)


@dataclass
class Seeded:
    ids: dict[str, str]
    codes: dict[str, str]


async def sent(store: SqliteStore, d: Decision, at: datetime, *, h2s_ms: float = 40.0) -> str:
    row, _ = await store.insert_message(d, state=MessageState.QUEUED, now=at,
                                        next_attempt_at=at)
    await store.claim_for_submit(row.id, now=at)
    await store.record_submit(row.id, gateway=d.gateway, smsc_ids=[f"S-{row.id[:8]}"],
                              now=at + timedelta(milliseconds=h2s_ms),
                              hangup_to_submit_ms=h2s_ms)
    return row.id


async def receipt(store: SqliteStore, mid: str, gw: str, state: ReceiptState, at: datetime,
                  err: str | None = None) -> None:
    await store.apply_receipt(Receipt(gateway=gw, state=state, smsc_id=f"S-{mid[:8]}",
                                      error_code=err, done_at=at), now=at)


async def seed(store: SqliteStore) -> Seeded:
    """Two rules, two gateways, one of each interesting outcome (figures asserted in tests)."""
    ids: dict[str, str] = {}
    codes: dict[str, str] = {}
    sup = replace(BASE, call_ended_at=T0)
    for i, name in enumerate(("m1", "m2", "m3")):
        d = replace(sup, call_id=f"1714554000.{i + 1}", number=f"+9198123456{i + 10}")
        ids[name] = await sent(store, d, T0 + timedelta(minutes=i), h2s_ms=20.0 * (i + 1))
    await receipt(store, ids["m1"], "smsc", ReceiptState.DELIVERED, T0 + timedelta(seconds=5))
    await receipt(store, ids["m2"], "smsc", ReceiptState.DELIVERED,
                  T0 + timedelta(minutes=1, seconds=9))
    await receipt(store, ids["m3"], "smsc", ReceiptState.UNDELIVERED,
                  T0 + timedelta(minutes=2, seconds=30), err="001")
    for name in ("m1", "m2"):
        codes[name] = f"Code{name}XYZ1"[:10]
        await store.add_link(codes[name], f"https://help.acme.in/t/{name}",
                             message_id=ids[name], now=T0)
    await store.add_click(codes["m1"], at=T0 + timedelta(minutes=3), user_agent="UA-1")
    await store.add_click(codes["m1"], at=T0 + timedelta(minutes=4), user_agent="UA-2")
    row, _ = await store.insert_message(replace(sup, call_id="1714554000.4",
                                                number="+919812345699"),
                                        state=MessageState.SUPPRESSED, now=T0, reason="opt_out")
    ids["m4"] = row.id
    missed = replace(BASE, rule="missed-call-sorry", gateway="backup",
                     template="sorry_we_missed_you", text="Sorry we missed your call.")
    ids["m5"] = await sent(store, replace(missed, call_id="1714640400.1",
                                          number="+919876500001"),
                           T0 + timedelta(days=1), h2s_ms=100.0)
    await receipt(store, ids["m5"], "backup", ReceiptState.DELIVERED,
                  T0 + timedelta(days=1, seconds=3))
    row, _ = await store.insert_message(replace(missed, call_id="1714640400.2",
                                                number="+919876500002"),
                                        state=MessageState.FAILED, now=T0 + timedelta(days=1),
                                        reason="rejected", detail="invalid destination")
    ids["m6"] = row.id
    row, _ = await store.insert_message(replace(missed, call_id="1714640400.3",
                                                number="+919876500003"),
                                        state=MessageState.SUPPRESSED,
                                        now=T0 + timedelta(days=1), reason="dnd")
    ids["m7"] = row.id
    await store.add_reply(InboundSms("smsc", "+919812345610", "ACMECO", "Thank you, great help!",
                                     T0 + timedelta(minutes=5)), message_id=ids["m1"],
                          sentiment=0.8)
    await store.add_reply(InboundSms("backup", "+919876500001", "ACMECO", "STOP",
                                     T0 + timedelta(days=1, minutes=1)), message_id=ids["m5"],
                          keyword="STOP", action="opt_out")
    return Seeded(ids, codes)


@dataclass
class Recorder:
    receipts: list[Receipt] = field(default_factory=list)
    inbound: list[InboundSms] = field(default_factory=list)
    fail_next: bool = False

    async def on_receipt(self, r: Receipt) -> None:
        self.receipts.append(r)

    async def on_inbound(self, sms: InboundSms) -> None:
        self.inbound.append(sms)


MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]

