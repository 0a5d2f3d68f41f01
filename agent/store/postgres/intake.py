"""The write path of call records on PostgreSQL: the call, its rows and their links at once.

A record is ONE statement (data-modifying CTEs: the call, what each rule said, the message rows
and their first events), so ONE round trip and its own transaction: no BEGIN and COMMIT around
it; the records that arrive while one statement is in flight go together in the next (group
commit, group.py). The idempotency key's unique index still decides which agent's insert
creates a message; the loser learns it lost from the same statement (its insert returns
nothing for that key) and gets the winner's row from the statement's own look at the table,
or, when the winner committed while the statement waited on the key, from one more read.
Records whose texts carry tracked links keep a transaction of their own: the links' report
triggers count a message's first link by looking for its others, which rows written by one
statement would all see at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from agent.models import CallRecord, MessageState, RuleOutcome
from agent.store.base import Decide, FactsAsk, MessageRow, NewMessage, PolicyFacts
from agent.store.postgres.calls import outcomes_replace
from agent.store.postgres.group import Grouped
from agent.store.postgres.pool import PgPool, Statement, message_row, utc
from agent.store.postgres.records import call_upsert

#: The message columns a record writes, in the order of the arrays it sends, and their types.
_COLUMNS = (
    ("id", "text"), ("idempotency_key", "text"), ("call_id", "text"), ("rule", "text"),
    ("trigger", "text"), ("recipient_kind", "text"), ("number", "text"), ("template", "text"),
    ("gateway", "text"), ("sender_id", "text"), ("text", "text"), ("encoding", "text"),
    ("segments", "integer"), ("category", "text"), ("dlt_template_id", "text"),
    ("dlt_entity_id", "text"), ("state", "text"), ("reason", "text"), ("detail", "text"),
    ("queued_at", "timestamptz"), ("final_at", "timestamptz"),
    ("next_attempt_at", "timestamptz"), ("expires_at", "timestamptz"),
    ("call_ended_at", "timestamptz"), ("pbx", "text"), ("attempts", "integer"),
    ("submitting_since", "timestamptz"), ("claimed_by", "text"), ("written_by", "text"),
)


#: One call record as ``Store.record_call`` takes it: (call, rows, when, what each rule said).
Record = tuple[CallRecord | None, Sequence[NewMessage], datetime | None,
               Sequence[RuleOutcome] | None]


def _claimed(m: NewMessage, at: datetime | None) -> bool:
    """A text the dispatcher will submit at once (``NewMessage.claim_via``) has its first
    attempt claimed by the insert that queues it, on the conditions of ``claim_for_submit``
    (queued, due, bound for that gateway): no claim statement before its submit. Only the
    agent whose insert creates the row holds the claim; a row another agent created comes back
    as that agent left it."""
    return (m.claim_via is not None and m.state is MessageState.QUEUED
            and m.decision.gateway == m.claim_via
            and (m.next_attempt_at is None or at is None or utc(m.next_attempt_at) <= at))


def _message_ctes(q: Statement, ctes: list[str],
                  messages: Sequence[tuple[NewMessage, datetime | None]],
                  owner: str | None, writer: str) -> None:
    """``ins``: the rows this statement created, with their first events (and the claim's,
    see ``_claimed``); ``seen``: rows with the same keys that were there before it (another
    agent's, or a record written twice). Rows go in key order, so two agents inserting the
    same keys wait for each other in the same order (never a deadlock)."""
    values: list[list[Any]] = [[] for _ in _COLUMNS]
    stamps: list[datetime | None] = []
    for m, at in sorted(messages, key=lambda ma: ma[0].decision.idempotency_key):
        d, state = m.decision, m.state
        claim = (1, at, owner) if _claimed(m, at) else (0, None, None)
        row = (
            uuid.uuid4().hex, d.idempotency_key, d.call_id, d.rule, d.trigger.value,
            d.recipient.value, d.number, d.template, d.gateway, d.sender_id, d.text,
            d.encoding, d.segments, d.category, d.dlt_template_id, d.dlt_entity_id,
            state.value, m.reason, m.detail, at if state is MessageState.QUEUED else None,
            at if state.final else None, utc(m.next_attempt_at), utc(m.expires_at),
            utc(d.call_ended_at), d.pbx, *claim, writer,
        )
        for column, value in zip(values, row, strict=True):
            column.append(value)
        stamps.append(at)
    arrays = ", ".join(q.p(v, f"{t}[]") for v, (_, t) in zip(values, _COLUMNS, strict=True))
    names = ", ".join(name for name, _ in _COLUMNS)
    ctes.append(
        f"ins AS (INSERT INTO messages ({names}, created_at, updated_at)"
        f" SELECT {', '.join(f'u.{name}' for name, _ in _COLUMNS)}, u.at, u.at FROM unnest({arrays}, {q.p(stamps, 'timestamptz[]')})"
        f" AS u({names}, at) ON CONFLICT (idempotency_key) DO NOTHING RETURNING *)")
    ctes.append(
        "ev AS (INSERT INTO message_events (message_id, at, state, reason, detail)"
        " SELECT id, created_at, state, reason, detail FROM ins UNION ALL"
        " SELECT id, submitting_since, 'queued', 'submitting',"
        " 'attempt ' || attempts || ' via ' || gateway FROM ins"
        " WHERE submitting_since IS NOT NULL)")
    keys = q.p(values[1], "text[]")
    ctes.append(f"seen AS (SELECT * FROM messages WHERE idempotency_key = ANY({keys}))")


async def write_records(conn: asyncpg.Connection, records: Sequence[Record],
                        owner: str | None, writer: str
                        ) -> list[list[tuple[MessageRow, bool]]]:
    """The records' one statement (see the module's docstring); for each record its rows in
    the order of its messages, each with True when this statement created it. No two records
    may be of the same call (a statement changes a row once)."""
    q = Statement()
    ctes: list[str] = []
    calls = [(call, at) for call, _, at, _ in records if call is not None]
    if calls:
        ctes.append(f"c AS ({call_upsert(q, calls)})")
    judged = [(call.call_id, call.pbx, call.trigger, outcomes, at)
              for call, _, at, outcomes in records
              if call is not None and outcomes is not None]
    if judged:
        upsert, delete = outcomes_replace(q, judged)
        ctes += [f"o AS ({upsert})", f"od AS ({delete})"]
    messages = [(m, at) for _, ms, at, _ in records for m in ms]
    if not messages:
        await conn.execute("WITH " + ", ".join(ctes) + " SELECT 1", *q.params)
        return [[] for _ in records]
    _message_ctes(q, ctes, messages, owner, writer)
    rows = await conn.fetch(
        "WITH " + ", ".join(ctes) + " SELECT true AS created, ins.* FROM ins"
        " UNION ALL SELECT false, seen.* FROM seen", *q.params)
    created = {r["idempotency_key"]: r for r in rows if r["created"]}
    existing = {r["idempotency_key"]: r for r in rows if not r["created"]}
    missing = [m.decision.idempotency_key for m, _ in messages
               if m.decision.idempotency_key not in created
               and m.decision.idempotency_key not in existing]
    if missing:
        # Another agent's insert of these keys committed while this statement waited on them:
        # its rows are newer than the statement's snapshot; a new read sees them.
        for r in await conn.fetch(
                "SELECT * FROM messages WHERE idempotency_key = ANY($1::text[])", missing):
            existing[r["idempotency_key"]] = r
    out: list[list[tuple[MessageRow, bool]]] = []
    done: dict[str, MessageRow] = {}  # a key twice: its first decision made the row
    for _, ms, _, _ in records:
        written = []
        for m in ms:
            key = m.decision.idempotency_key
            if key in done:
                written.append((done[key], False))
                continue
            done[key] = message_row(created[key] if key in created else existing[key])
            written.append((done[key], key in created))
        out.append(written)
    return out


async def write_links(conn: asyncpg.Connection, messages: Sequence[NewMessage],
                      written: Sequence[tuple[MessageRow, bool]], at: datetime | None) -> None:
    """Each new row's tracked links, counted against the first new row that carries them."""
    links: dict[str, tuple[str, str]] = {}  # code -> (url, message id)
    for m, (row, created) in zip(messages, written, strict=True):
        if created:
            for link in m.decision.links:
                links.setdefault(link.code, (link.url, row.id))
    if links:
        await conn.executemany(
            "INSERT INTO links (code, message_id, url, created_at) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT (code) DO NOTHING",
            [(code, mid, url, at) for code, (url, mid) in links.items()])


class IntakeOps(PgPool):
    """``record_call`` (see ``Store.record_call``): one statement per call record, and one
    for all the records that came while the one before was in flight (group.py)."""

    _records: Grouped[Record, list[tuple[MessageRow, bool]]] | None = None

    async def record_call(
        self, call: CallRecord | None, messages: Sequence[NewMessage], *, now: datetime,
        outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[tuple[MessageRow, bool]]:
        at = utc(now)
        if call is None and not messages:
            return []
        record: Record = (call, messages, at, outcomes)
        if any(m.decision.links for m in messages):
            async with self._tx() as conn:
                [written] = await write_records(conn, [record], self.owner, self.writer)
                await write_links(conn, messages, written, at)
                return written
        if self._records is None:
            self._records = Grouped(self._write_records, key=_call_key)
        return await self._records(record)

    async def _write_records(self, records: Sequence[Record]
                             ) -> list[list[tuple[MessageRow, bool]]]:
        async with self._tx(single=True) as conn:
            return await write_records(conn, records, self.owner, self.writer)


    async def decide_and_record(
        self, call: CallRecord | None, asks: Sequence[FactsAsk | None], decide: Decide, *,
        now: datetime, outcomes: Sequence[RuleOutcome] | None = None,
    ) -> tuple[list[NewMessage], list[tuple[MessageRow, bool]]]:
        """``Outbox.decide_and_record`` as its parts: the facts (one grouped read for all
        the asks, shared with other records' reads in flight), the decision on the loop, then
        ``record_call`` (grouped commit). Agents sharing the database each decide on what
        was committed when they read, as before; the idempotency key still settles a race."""
        facts = await asyncio.gather(*(
            self.policy_facts(a.number, a.rule, sent_since=a.sent_since, agents=a.agents)
            for a in asks if a is not None))
        got = iter(facts)
        msgs = decide([None if a is None else next(got) for a in asks])
        return msgs, await self.record_call(call, msgs, now=now, outcomes=outcomes)

    if TYPE_CHECKING:  # records.RecordOps's, beside this in PostgresStore
        async def policy_facts(self, number: str, rule: str, *,
                               sent_since: datetime | None = None,
                               agents: bool = False) -> PolicyFacts: ...


def _call_key(record: Record) -> tuple[str, str] | None:
    call = record[0]
    return None if call is None else (call.pbx, call.call_id)
