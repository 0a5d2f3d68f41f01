"""Synthetic traffic for benchmarks and large-database tests: a year of calls, what each rule
said about them, messages, their history, receipts, links, clicks and replies, bulk-written
through the store's own schema.

The mix imitates a contact centre: three rules (a support follow-up with a tracked link, a
missed-call apology, an agent summary), each call judged by all three (one rule outcome each, as
the agent records them), two gateways, mostly delivered, some undelivered,
expired and failed, ~12% suppressed for the usual reasons, receipts for everything submitted.
Rows go in time order, one transaction per chunk, so a million messages take about a minute.
They are written in the shape of schema version 6 and brought to the latest version by the
store's own migrations, as an upgrade would (``upgrade=False`` leaves them at version 6: what
the benchmark measures the compact shapes against).
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.store.frozen import MIGRATION_FUNCTIONS
from agent.store.migrations import LATEST_VERSION, MIGRATIONS

_RULES = (  # name, template, share, recipient, carries a link
    ("support-followup", "support_ticket", 0.55, "caller", True),
    ("missed-call-sorry", "sorry_we_missed_you", 0.30, "caller", False),
    ("agent-summary", "agent_summary", 0.15, "agent", False),
)
_SUPPRESS = ("cooldown", "opt_out", "dnd", "quiet_hours", "rate_limited", "max_age")
_TEXTS = {
    "support_ticket": "Hi {name}, your ticket #{n} is logged. Track it: https://x.acme.in/l/{code}",
    "sorry_we_missed_you": "Sorry we missed your call, {name}. We will call you back shortly.",
    "agent_summary": "Caller {num} waited {n}s in Support at {hh}. Ticket #{n}.",
}
_NAMES = ("Asha", "Ravi", "Priya", "Meera", "Arjun", "Kavya", "Rahul", "Divya", "there")


def ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: The schema version the generator's rows are shaped for.
ROWS_VERSION = 6


def create_schema(conn: sqlite3.Connection, journal: str = "WAL",
                  version: int = LATEST_VERSION) -> None:
    """The store's schema on an empty file (what ``SqliteStore.open`` does on first start), up
    to ``version``."""
    for statement in _first_statements():
        conn.execute(statement)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    if conn.execute("PRAGMA user_version").fetchone()[0]:
        return
    migrate(conn, 0, version)


def migrate(conn: sqlite3.Connection, found: int, version: int = LATEST_VERSION) -> None:
    """Migrations ``found + 1`` .. ``version`` in one transaction (the writer's ``_migrate``
    without its checks: for files this module made)."""
    for name, fn in MIGRATION_FUNCTIONS.items():
        conn.create_function(name, -1, fn, deterministic=True)
    conn.execute("BEGIN")
    for migration in MIGRATIONS[found:version]:
        for statement in migration:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("COMMIT")


def _first_statements() -> tuple[str, ...]:
    # Kept in one place with the writer's own first-open pragmas (see writer.FIRST_OPEN).
    from agent.store.sqlite.writer import FIRST_OPEN

    return FIRST_OPEN


@dataclass(frozen=True, slots=True)
class Generated:
    calls: int
    messages: int
    first: datetime
    last: datetime


def generate(
    path: str | Path,
    *,
    messages: int = 1_000_000,
    days: int = 365,
    end: datetime | None = None,
    seed: int = 20,
    chunk: int = 20_000,
    progress: Callable[[int], None] | None = None,
    upgrade: bool = True,
) -> Generated:
    """Write ``messages`` messages (with their calls, events, receipts, links, clicks and replies)
    spread over the ``days`` before ``end`` into a new store at ``path``, migrated to the latest
    schema unless ``upgrade`` is False."""
    rnd = random.Random(seed)
    end = end or datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    step = (end - start).total_seconds() / max(1, messages)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A bulk load: no journal, no fsync, a big cache for the random-keyed indexes. The file
        # is switched to WAL at the end, as the agent runs it.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        create_schema(conn, journal="MEMORY", version=ROWS_VERSION)
        made = calls = 0
        record_base = _record_template()
        while made < messages:
            rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in _INSERTS}
            n = min(chunk, messages - made)
            i = 0
            while i < n:
                calls += 1
                t = start + timedelta(seconds=(made + i) * step)
                per_call = 2 if rnd.random() < 0.1 and i + 1 < n else 1
                call_id = f"{int(t.timestamp())}.{calls}"
                caller = f"+9198{rnd.randrange(10**8):08d}"
                _call_rows(rows, rnd, record_base, call_id, caller, t)
                texted = [_message_rows(rows, rnd, call_id, caller, t + timedelta(seconds=k), k)
                          for k in range(per_call)]
                _outcome_rows(rows, call_id, texted, t)
                i += per_call
            conn.execute("BEGIN")
            for table, sql in _INSERTS.items():
                conn.executemany(sql, rows[table])
            conn.execute("COMMIT")
            made += n
            if progress:
                progress(made)
        if upgrade:
            migrate(conn, ROWS_VERSION)
        conn.execute("PRAGMA journal_mode = WAL")
        return Generated(calls, messages, start, end)
    finally:
        conn.close()


_INSERTS = {
    "calls": "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller, ended_at,"
             " created_at, agent) VALUES (?,?,?,?,?,?,?,?,?)",
    "messages": "INSERT INTO messages (id, idempotency_key, call_id, rule, trigger, recipient_kind,"
                " number, template, gateway, sender_id, text, encoding, segments, category, state,"
                " reason, detail, attempts, smsc_ids, error_code, created_at, queued_at,"
                " submitted_at, final_at, call_ended_at, hangup_to_submit_ms, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "events": "INSERT INTO message_events (message_id, at, state, reason, detail)"
              " VALUES (?,?,?,?,?)",
    "smsc_ids": "INSERT INTO message_smsc_ids (gateway, smsc_id, message_id) VALUES (?,?,?)",
    "receipts": "INSERT INTO receipts (message_id, smsc_id, gateway, state, error_code, done_at,"
                " received_at, raw, dedupe_key) VALUES (?,?,?,?,?,?,?,?,?)",
    "outcomes": "INSERT INTO rule_outcomes (call_id, trigger, position, rule, matched, reason,"
                " skipped, decided_at) VALUES (?,?,?,?,?,?,?,?)",
    "links": "INSERT INTO links (code, message_id, url, created_at) VALUES (?,?,?,?)",
    "clicks": "INSERT INTO clicks (code, at, user_agent) VALUES (?,?,?)",
    "replies": "INSERT INTO replies (message_id, gateway, number, recipient, text, keyword, action,"
               " sentiment, rating, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
}


def _record_template() -> dict[str, object]:
    from agent.models import CallRecord

    return CallRecord(call_id="x").to_dict()


def _call_rows(rows: dict[str, list[tuple[object, ...]]], rnd: random.Random,
               base: dict[str, object], call_id: str, caller: str, t: datetime) -> None:
    talk = rnd.randrange(0, 600)
    answered = rnd.random() < 0.7
    rec = dict(base)
    rec.update(call_id=call_id, caller=caller, did="+918045671234", queue="Support",
               agent="2001" if answered else None, agent_name="Priya" if answered else None,
               disposition="answered" if answered else "missed",
               started_at=(t - timedelta(seconds=talk + 20)).isoformat(),
               answered_at=(t - timedelta(seconds=talk)).isoformat() if answered else None,
               ended_at=t.isoformat(), wait_seconds=20.0, talk_seconds=float(talk),
               duration_seconds=float(talk + 20), hangup_cause=16, hangup_by="caller",
               vars={"TICKET": str(rnd.randrange(10**5))})
    rows["calls"].append((call_id, json.dumps(rec, separators=(",", ":")), "call_completed",
                          rec["disposition"], "Support", caller, ts(t), ts(t), rec["agent"]))


def _pick_rule(rnd: random.Random) -> tuple[str, str, float, str, bool]:
    x = rnd.random()
    for r in _RULES:
        if x < r[2]:
            return r
        x -= r[2]
    return _RULES[-1]


def _outcome_rows(rows: dict[str, list[tuple[object, ...]]], call_id: str, texted: list[str],
                  t: datetime) -> None:
    """What each rule said about the call (``record_rule_outcomes``): the agent keeps one row per
    rule on the trigger, matched or with the condition that failed."""
    for position, (rule, *_) in enumerate(_RULES):
        matched = rule in texted
        rows["outcomes"].append((
            call_id, "call_completed", position, rule, int(matched),
            None if matched else "disposition is answered, rule wants one of ['missed']", "[]",
            ts(t)))


def _message_rows(rows: dict[str, list[tuple[object, ...]]], rnd: random.Random, call_id: str,
                  caller: str, t: datetime, k: int) -> str:
    """One message's rows; returns its rule's name."""
    rule, template, _, kind, linked = _pick_rule(rnd)
    number = caller if kind == "caller" else "+919812345678"
    gateway = "smsc" if rnd.random() < 0.9 else "backup"
    mid = uuid.UUID(int=rnd.getrandbits(128)).hex
    code = mid[:12]
    text = _TEXTS[template].format(name=rnd.choice(_NAMES), n=rnd.randrange(10**5), code=code,
                                   num=caller, hh=t.strftime("%H:%M"))
    created = ts(t)
    x = rnd.random()
    events = [(mid, created, "queued", None, None)]
    reason = detail = error = submitted = final = None
    h2s: float | None = None
    smsc = "[]"
    if x < 0.12:
        state, reason = "suppressed", rnd.choice(_SUPPRESS)
        final = created
        events = [(mid, created, state, reason, None)]
    else:
        sub_t = t + timedelta(milliseconds=rnd.lognormvariate(3.0, 0.5))
        submitted = ts(sub_t)
        h2s = round((sub_t - t).total_seconds() * 1000, 3)
        sid = f"{gateway[0].upper()}{rnd.getrandbits(60):015x}"
        smsc = json.dumps([sid])
        events.append((mid, submitted, "submitted", None, None))
        rows["smsc_ids"].append((gateway, sid, mid))
        y = rnd.random()
        state, stat, err = (("delivered", "DELIVRD", "000") if y < 0.93 else
                            ("undelivered", "UNDELIV", "001") if y < 0.965 else
                            ("expired", "EXPIRED", "000") if y < 0.975 else
                            ("failed", None, "0x00000045") if y < 0.995 else
                            ("submitted", None, None))
        if state == "failed":
            reason, error, final = "submit_failed", err, submitted
            events.append((mid, submitted, state, reason, "submit_sm_resp 0x00000045"))
        elif stat is not None:
            done = sub_t + timedelta(seconds=rnd.lognormvariate(1.5, 0.8))
            final = ts(done)
            reason, detail = "receipt", f"{gateway} receipt {state} for {sid}"
            error = err if state != "delivered" else None
            events.append((mid, final, state, reason, detail))
            raw = (f"id:{sid} sub:001 dlvrd:{'001' if state == 'delivered' else '000'} submit "
                   f"date:{sub_t:%y%m%d%H%M} done date:{done:%y%m%d%H%M} stat:{stat} err:{err}")
            rows["receipts"].append((mid, sid, gateway, state, err, final, final, raw,
                                     f"{gateway}:{sid}:{stat}"))
            if linked and state == "delivered":
                rows["links"].append((code, mid, f"https://help.acme.in/t/{code}", created))
                if rnd.random() < 0.12:
                    rows["clicks"].append((code, ts(done + timedelta(minutes=3)),
                                           "Mozilla/5.0 (Linux; Android 14)"))
            if state == "delivered" and rnd.random() < 0.02:
                stop = rnd.random() < 0.2
                rows["replies"].append((mid, gateway, number, "ACMECO",
                                        "STOP" if stop else "Thanks, that was quick",
                                        "STOP" if stop else None, "opt_out" if stop else None,
                                        None if stop else rnd.uniform(-1, 1),
                                        None if stop else rnd.randrange(1, 6), final))
    rows["messages"].append((
        mid, f"{call_id}:{rule}:{number}:{k}", call_id, rule, "call_completed", kind, number,
        template, gateway, "ACMECO", text, "GSM-7", 1, "transactional", state, reason, detail,
        0 if submitted is None else 1, smsc, error, created, created, submitted, final,
        created, h2s, final or submitted or created))
    rows["events"].extend(events)
    return rule
