"""A call history for the dashboard tests: records judged by the real rule engine with the
repository's rules.yaml, written through the store's public API.

``generate(store, n)`` writes ``n`` calls spread over the last six days, plus a few calls the
tests look for by id (``SHOWCASE``). Messages of the bulk calls are written in their final
state in one step (a delivered row, a suppressed row with its reason); the showcase calls go
the whole way (queued, submitted, receipt) so their history is what the agent would write.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.models import (
    CallRecord,
    Decision,
    Direction,
    Disposition,
    HangupBy,
    MessageState,
    Receipt,
    ReceiptState,
    RecipientKind,
    RuleOutcome,
    Trigger,
)
from agent.rules.engine import explain, rule_outcomes
from agent.rules.loader import RuleSet, load_rules
from agent.store.histpack import pack_event
from agent.store.sqlite import SqliteStore
from agent.store.packing import (
    DISPOSITION_CODES,
    STATE_CODES,
    TRIGGER_CODES,
    key_digest,
    label_code,
    micros,
    pack_record,
)
from agent.store.sqlite.calls import pack_outcomes

REPO = Path(__file__).resolve().parents[2]

OPTED_OUT = "+919811000555"  # opted out by a STOP reply before its call
SALES_CALLER = "+919811000777"  # appears inside the agent's summary text


@dataclass(frozen=True)
class Showcase:
    suppressed: str = "showcase.suppressed"  # missed call, caller opted out -> suppressed/opt_out
    agent_summary: str = "showcase.agent"  # Sales call: the agent's text quotes the caller
    no_mobile: str = "showcase.nomobile"  # agent without a mobile -> suppressed/invalid_number
    ambiguous: str = "showcase.ambiguous"  # a support SMS whose submit outcome is unknown


SHOWCASE = Showcase()


def rules() -> RuleSet:
    return load_rules(REPO / "rules.yaml", env={})


def _record(rng: random.Random, i: int, ended: datetime) -> CallRecord:
    kind = rng.choices(["support", "short", "missed", "sales", "anonymous", "appointment"],
                       weights=[30, 15, 30, 10, 5, 10])[0]
    caller = f"+9198{rng.randrange(10**8):08d}"
    talk = {"support": 30 + rng.randrange(400), "short": rng.randrange(25)}.get(kind, 0.0)
    answered = kind not in ("missed", "anonymous")
    base = CallRecord(
        call_id=f"{int(ended.timestamp())}.{i}", caller=caller, did="+918041234567",
        direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
        started_at=ended - timedelta(seconds=talk + 12), ended_at=ended, talk_seconds=talk,
        wait_seconds=12, duration_seconds=talk + 12, hangup_by=HangupBy.CALLER,
    )
    if kind in ("support", "short"):
        agent = rng.choice(["2001", "2002"])
        return replace(base, queue="Support", agent=agent, vars={"TICKET": str(40000 + i)},
                       answered_at=base.started_at + timedelta(seconds=12))
    if kind == "missed":
        return replace(base, queue=rng.choice(["Billing", "Support"]),
                       disposition=rng.choice([Disposition.MISSED, Disposition.ABANDONED]),
                       answered_at=None)
    if kind == "sales":
        return replace(base, queue="Sales", agent="2002", answered_at=base.started_at)
    if kind == "appointment":
        return replace(base, agent="2002", tags=("appointment",), answered_at=base.started_at)
    return replace(base, caller="anonymous", queue="Billing", disposition=Disposition.MISSED)


def _bulk_state(rng: random.Random, d: Decision) -> tuple[MessageState, str | None, str | None]:
    if d.suppress is not None:
        return MessageState.SUPPRESSED, d.suppress.value, d.detail
    roll = rng.random()
    if roll < 0.78:
        return MessageState.DELIVERED, "receipt", "smsc receipt delivered"
    if roll < 0.84:
        return MessageState.UNDELIVERED, "receipt", "smsc receipt undelivered (error 001)"
    if roll < 0.90:
        return MessageState.SUPPRESSED, "cooldown", f"{d.rule} texted this number within 4h"
    if roll < 0.95:
        return MessageState.SUPPRESSED, "dnd", "number is on the DND list"
    return MessageState.FAILED, "rejected", "invalid destination address"


Judged = tuple[CallRecord, list[RuleOutcome], list[Decision]]


def _judge(rs: RuleSet, record: CallRecord) -> Judged:
    traces = explain(rs, record, now=record.ended_at)
    return (record, rule_outcomes(rs, record.trigger, traces),
            [d for t in traces for d in t.decisions])


def _like(proto: Judged, call_id: str, ended: datetime, caller: str) -> Judged:
    """Another call judged like ``proto`` (same kind, other caller and time): the engine runs
    once per kind of call, not 10,000 times (2 ms a call on a busy 2-core machine)."""
    rec, outcomes, decisions = proto
    shift = ended - (rec.ended_at or ended)
    moved = {k: getattr(rec, k) + shift for k in ("started_at", "answered_at")
             if getattr(rec, k) is not None}
    new = replace(rec, call_id=call_id, ended_at=ended,
                  caller=caller if rec.caller != "anonymous" else rec.caller, **moved)
    out = [replace(d, call_id=call_id, call_ended_at=ended,
                   number=new.caller if d.recipient is RecipientKind.CALLER else d.number,
                   text=d.text.replace(rec.caller, new.caller) if d.text else d.text)
           for d in decisions]
    return new, outcomes, out


def _bulk_rows(judged: Judged, rng: random.Random,
               out: dict[str, list[tuple[object, ...]]]) -> None:
    """The rows the agent would have written for one call, as tuples for executemany."""
    record, outcomes, decisions = judged
    at = micros(record.ended_at)
    # A completed call's judgement is in its row, decided as it was stored (schema 18).
    out["calls"].append((record.call_id, pack_record(record), TRIGGER_CODES[record.trigger],
                         DISPOSITION_CODES[record.disposition], record.queue, record.caller,
                         micros(record.ended_at), micros(record.ended_at), record.agent,
                         pack_outcomes(outcomes) if outcomes else None, 0 if outcomes else None))
    for d in decisions:
        state, reason, detail = _bulk_state(rng, d)
        mid = uuid.UUID(int=rng.getrandbits(128)).hex
        sent = state is not MessageState.SUPPRESSED
        # a message's times are integers (schemas 17, 19), its labels codes (schema 25)
        out["messages"].append((
            mid, key_digest(d.idempotency_key), d.call_id, d.rule,
            label_code("trigger", d.trigger.value), label_code("recipient_kind", d.recipient.value),
            d.number, d.template, d.gateway, d.sender_id, d.text,
            label_code("encoding", d.encoding), d.segments, label_code("category", d.category),
            state.value, reason, detail, int(sent), at, at if sent else None, at, at,
            4.0 if sent else None))
        # created at the call's end, as its one event (the history's form: schema 23)
        out["events"].append((mid, pack_event(at, at, STATE_CODES[state.value], reason, detail)))


_BULK_SQL = {
    "calls": "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller, ended_at,"
             " created_at, agent, outcomes, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    "messages": "INSERT INTO messages (id, idem, call_id, rule, trigger,"
                " recipient_kind, number, template, gateway, sender_id, text, encoding, segments,"
                " category, state, reason, detail, attempts, created_at, submitted_at, final_at,"
                " call_ended_at, hangup_to_submit_ms)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    # A message's history names it by ref (schema 13), its events packed (schema 23).
    "events": "INSERT INTO message_history (msg, log) SELECT ref, ?2 FROM messages WHERE id = ?1",
}


def _bulk_write(path: Path, rows: dict[str, list[tuple[object, ...]]]) -> None:
    # Straight into the store's tables (the file was created, and migrated, by SqliteStore):
    # 10,000 calls through the writer's one-op-at-a-time API take 20 s on a 2-core machine.
    conn = sqlite3.connect(path)
    try:
        with conn:
            for table, sql in _BULK_SQL.items():
                conn.executemany(sql, rows[table])
    finally:
        conn.close()


async def _full_path(store: SqliteStore, rs: RuleSet, record: CallRecord, *,
                     receipt: ReceiptState | None, opted_out: bool = False) -> list[str]:
    """What the agent writes: outcomes, then each message queued, submitted and receipted."""
    at = record.ended_at
    assert at is not None
    traces = explain(rs, record, now=at)
    await store.save_call(record, now=at)
    await store.record_rule_outcomes(record.call_id, record.trigger,
                                     rule_outcomes(rs, record.trigger, traces), now=at,
                                     pbx=record.pbx)
    ids = []
    for d in (d for t in traces for d in t.decisions):
        if d.suppress is not None or opted_out:
            why = d.suppress.value if d.suppress else "opt_out"
            detail = d.detail if d.suppress else "number opted out (reply:smsc:STOP)"
            row, _ = await store.insert_message(d, state=MessageState.SUPPRESSED, now=at,
                                                reason=why, detail=detail)
            ids.append(row.id)
            continue
        row, _ = await store.insert_message(d, state=MessageState.QUEUED, now=at,
                                            next_attempt_at=at)
        await store.claim_for_submit(row.id, now=at)
        if receipt is None:  # the agent died mid-submit: the restart marks it ambiguous
            await store.recover_in_flight(now=at + timedelta(seconds=30))
        else:
            smsc = f"SIM-{row.id[:10]}"
            await store.record_submit(row.id, gateway=d.gateway, smsc_ids=[smsc],
                                      now=at + timedelta(milliseconds=6),
                                      hangup_to_submit_ms=6.0)
            await store.apply_receipt(Receipt(gateway=d.gateway, state=receipt, smsc_id=smsc,
                                              error_code="000", done_at=at + timedelta(seconds=4)),
                                      now=at + timedelta(seconds=4))
        ids.append(row.id)
    return ids


async def showcase(store: SqliteStore, rs: RuleSet, now: datetime) -> None:
    await store.opt_out(OPTED_OUT, source="reply:smsc:STOP", now=now - timedelta(days=7))
    base = CallRecord(call_id="", did="+918041234567", direction=Direction.INBOUND,
                      ended_at=now - timedelta(minutes=30), started_at=now - timedelta(minutes=31),
                      hangup_by=HangupBy.CALLER)
    missed = replace(base, call_id=SHOWCASE.suppressed, caller=OPTED_OUT, queue="Billing",
                     disposition=Disposition.MISSED)
    await _full_path(store, rs, missed, receipt=ReceiptState.DELIVERED, opted_out=True)
    sales = replace(base, call_id=SHOWCASE.agent_summary, caller=SALES_CALLER, caller_name="Ravi",
                    queue="Sales", agent="2001", disposition=Disposition.ANSWERED,
                    trigger=Trigger.CALL_CONNECTED, answered_at=now - timedelta(minutes=31),
                    ended_at=now - timedelta(minutes=29))
    await _full_path(store, rs, sales, receipt=ReceiptState.DELIVERED)
    no_mobile = replace(sales, call_id=SHOWCASE.no_mobile, caller="+919811000888", agent="2009",
                        agent_name=None, caller_name=None, ended_at=now - timedelta(minutes=28))
    await _full_path(store, rs, no_mobile, receipt=ReceiptState.DELIVERED)
    support = replace(base, call_id=SHOWCASE.ambiguous, caller="+919811000999", queue="Support",
                      agent="2001", disposition=Disposition.ANSWERED, talk_seconds=95,
                      vars={"TICKET": "77001"}, answered_at=now - timedelta(minutes=31),
                      ended_at=now - timedelta(minutes=27))
    await _full_path(store, rs, support, receipt=None)


async def generate(store: SqliteStore, n: int, *, now: datetime | None = None,
                   seed: int = 17, kinds: int = 300) -> None:
    """``n`` calls over the six days before ``now``, then the showcase calls (newest)."""
    now = now or datetime.now(UTC)
    rs = rules()
    rng = random.Random(seed)
    span = timedelta(days=6).total_seconds()
    protos = [_judge(rs, _record(rng, i, now)) for i in range(min(kinds, n))]
    rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in _BULK_SQL}
    for i in range(n):
        ended = now - timedelta(hours=1, seconds=span * (i + 1) / n)
        call = _like(protos[i % len(protos)], f"{int(ended.timestamp())}.{i}", ended,
                     f"+9198{rng.randrange(10**8):08d}")
        _bulk_rows(call, rng, rows)
    await asyncio.to_thread(_bulk_write, store.path, rows)
    await showcase(store, rs, now)
