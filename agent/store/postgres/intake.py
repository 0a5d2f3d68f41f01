"""The write path of call records on PostgreSQL: the policies' facts, the decision, the call,
its rows and their links at once, decided about one number at a time across agents.

The records that arrive while one is in flight go together in the next group (group.py). A
group that decides about numbers takes two round trips before its texts can go: one function
(numbers.py) that takes the numbers' advisory locks, held by the connection's session, in a
fixed order, and then reads their facts with a snapshot taken after the locks; the decisions,
on the loop; ONE statement for the rows (data-modifying CTEs: the calls, what each rule said,
the message rows and their first events), which commits on its own. The locks are let go after
that commit, in a round trip nobody waits for (a failure closes the connection, and the locks
go with its session). A group does not wait for a number another agent holds: that number's
intakes go to a second group that waits for it (so one agent of a pair, behind the other on a
call, never holds up its other calls). The idempotency key's unique index still
decides which agent's insert creates a message; the loser learns it lost from the same
statement (its insert returns nothing for that key) and gets the winner's row from the
statement's own look at the table, or, when the winner committed while the statement waited
on the key, from one more read."""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from agent.errors import StoreError
from agent.models import CallRecord, MessageState, RuleOutcome
from agent.store.base import Committed, Decide, FactsAsk, MessageRow, NewMessage, PolicyFacts
from agent.store.postgres.calls import outcomes_replace
from agent.store.postgres.group import Failed, Grouped
from agent.store.postgres.numbers import number_key
from agent.store.postgres.pool import PgPool, SessionLocks, Statement, message_row, utc
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


async def write_links(conn: asyncpg.Connection,
                      records: Sequence[tuple[Sequence[NewMessage],
                                              Sequence[tuple[MessageRow, bool]],
                                              datetime | None]]) -> None:
    """Each new row's tracked links, counted against the first new row that carries them;
    for records ``(messages, their rows, when)``. A statement per link (executemany): the
    links' report triggers count a message's first link by looking for its others."""
    links: dict[str, tuple[str, str, datetime | None]] = {}  # code -> (url, message id, at)
    for messages, written, at in records:
        for m, (row, created) in zip(messages, written, strict=True):
            if created:
                for link in m.decision.links:
                    links.setdefault(link.code, (link.url, row.id, at))
    if links:
        await conn.executemany(
            "INSERT INTO links (code, message_id, url, created_at) VALUES ($1,$2,$3,$4)"
            " ON CONFLICT (code) DO NOTHING",
            [(code, mid, url, at) for code, (url, mid, at) in links.items()])


class _Intake:
    """One ``decide_and_record`` on its way: the asks, what was decided on which facts."""

    __slots__ = ("call", "asks", "decide", "at", "outcomes", "facts", "msgs", "failed", "busy")

    def __init__(self, call: CallRecord | None, asks: Sequence[FactsAsk | None],
                 decide: Decide, at: datetime | None,
                 outcomes: Sequence[RuleOutcome] | None) -> None:
        self.call, self.asks, self.decide = call, list(asks), decide
        self.at, self.outcomes = at, outcomes
        self.facts: list[PolicyFacts | None] | None = None
        self.msgs: list[NewMessage] | None = None
        self.failed: Exception | None = None
        self.busy = False  # a number's lock was held elsewhere: decide it in a waiting group

    def numbers(self) -> set[str]:
        return {a.number for a in self.asks if a is not None}

    def record(self) -> Record:
        return (self.call, self.msgs or [], self.at, self.outcomes)


Result = tuple[list[NewMessage], list[tuple[MessageRow, bool]]]
_BUSY: Any = object()  # a group's answer for an intake it left to a waiting group


class IntakeOps(PgPool):
    """``decide_and_record`` (see ``Store.decide_and_record``): the decisions that come while
    one group is in flight go together (group.py), and hold the locks of their numbers
    (numbers.py) from before their facts are read until their rows are committed.
    Two agents deciding about one number at once are taken in turn, as SQLite's one writer
    takes them: the second reads the first's rows (its cooldown and per-number count see that
    text) and any opt-out or DND entry committed before it.

    A group does not wait for a lock another transaction holds: the intakes of that number go
    to a second group that does (``_waiting``), and the rest are decided at once. The two
    agents of a pair decide every call, at about the same moment; one of them gets its
    numbers and texts, the other's intakes wait for that commit and find the rows made."""

    _intakes: Grouped[_Intake, Result] | None = None
    _waiting: Grouped[_Intake, Result] | None = None
    _in_waiting: dict[Hashable, int]  # intakes in ``_waiting`` per call and number

    async def record_call(
        self, call: CallRecord | None, messages: Sequence[NewMessage], *, now: datetime,
        outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[tuple[MessageRow, bool]]:
        """Rows decided without the store's facts: written as they are."""
        msgs = list(messages)
        _, written = await self.decide_and_record(
            call, [None] * len(msgs), lambda _: msgs, now=now, outcomes=outcomes)
        return written

    async def decide_and_record(
        self, call: CallRecord | None, asks: Sequence[FactsAsk | None], decide: Decide, *,
        now: datetime, outcomes: Sequence[RuleOutcome] | None = None,
        committed: Committed | None = None,
    ) -> Result:
        """``Outbox.decide_and_record``: locks and facts (one round trip), the decision (on
        the loop, with the locks held), rows (one statement that commits), for the whole
        group; the locks are let go after it. A group with no numbers to decide about is one
        statement. ``committed`` is not called: the caller resumes with the result as soon
        as this store could call it."""
        if call is None and not asks:
            return decide([]), []
        if self._intakes is None:
            self._intakes = Grouped(self._intake, keys=_intake_keys)
            self._waiting = Grouped(self._intake_waiting, keys=_intake_keys)
            self._in_waiting: dict[Hashable, int] = {}
        assert self._waiting is not None
        it = _Intake(call, asks, decide, utc(now), outcomes)
        keys = _intake_keys(it)
        # After an intake of the same call or number that waits, not before it (a call's
        # later record must not be overwritten by its earlier one).
        result = (_BUSY if any(k in self._in_waiting for k in keys)
                  else await self._intakes(it))
        if result is _BUSY:
            for k in keys:
                self._in_waiting[k] = self._in_waiting.get(k, 0) + 1
            try:
                result = await self._waiting(it)
            finally:
                for k in keys:
                    if self._in_waiting[k] == 1:
                        del self._in_waiting[k]
                    else:
                        self._in_waiting[k] -= 1
        return result

    async def _intake_waiting(self, items: Sequence[_Intake]) -> list[Result | Failed]:
        return await self._intake(items, wait=True)

    async def _intake(self, items: Sequence[_Intake], *, wait: bool = False
                      ) -> list[Result | Failed]:
        asks = [(it, a) for it in items for a in it.asks if a is not None]
        if not asks:
            for it in items:
                _decide(it, [None] * len(it.asks))
            if not any(m.decision.links for it in items for m in it.msgs or ()):
                async with self._tx(single=True) as conn:
                    return await _write(conn, items, self.owner, self.writer)
            async with self._tx() as conn:
                return await _write(conn, items, self.owner, self.writer)
        locks = SessionLocks()
        async with self._tx(session_locks=locks) as conn:
            rows = await conn.fetch(
                "SELECT * FROM aftercall_lock_facts($1::int4[], $2::text[], $3::text[],"
                " $4::timestamptz[], $5::bool[], $6)",
                [number_key(a.number) for _, a in asks], [a.number for _, a in asks],
                [a.rule for _, a in asks], [utc(a.sent_since) for _, a in asks],
                [a.agents for _, a in asks], wait)
            locks.held = not all(r["o_busy"] for r in rows)  # none taken: none to let go
            got = iter(rows)
            for it in items:
                mine = [None if a is None else next(got) for a in it.asks]
                it.busy = any(r is not None and r["o_busy"] for r in mine)
                if it.busy:
                    continue
                facts = [None if r is None else PolicyFacts(
                    bool(r["o_opted_out"]), bool(r["o_dnd"]), r["o_last_sent"],
                    int(r["o_sent"])) for r in mine]
                if it.msgs is None:
                    _decide(it, facts)
                elif it.failed is None and facts != it.facts:
                    # decided in a group whose write failed; its numbers changed since
                    it.failed = StoreError(f"{self.where}: a number's texts or lists changed"
                                           " while its call was being recorded; decide again")
            if not any(m.decision.links for it in items for m in it.msgs or ()):
                return await _write(conn, items, self.owner, self.writer)
            async with conn.transaction():
                return await _write(conn, items, self.owner, self.writer)


def _decide(it: _Intake, facts: list[PolicyFacts | None]) -> None:
    """The decision, once per intake (it counts what it lets through): a later write of the
    intake (alone, after its group failed) reuses it."""
    if it.msgs is not None or it.failed is not None:
        return
    it.facts = facts
    try:
        it.msgs = list(it.decide(facts))
    except Exception as exc:  # noqa: BLE001 - its own caller's (an intake given up), not the group's
        it.failed = exc


async def _write(conn: asyncpg.Connection, items: Sequence[_Intake], owner: str | None,
                 writer: str) -> list[Result | Failed]:
    """The decided intakes' rows (one statement) and their links, on ``conn``; ``_BUSY`` for
    those left to a waiting group."""
    ok = [it for it in items if it.failed is None and not it.busy]
    written = iter(await write_records(conn, [it.record() for it in ok], owner, writer)
                   if ok else [])
    out: list[Result | Failed] = []
    links: list[tuple[Sequence[NewMessage], list[tuple[MessageRow, bool]], datetime | None]] = []
    for it in items:
        if it.failed is not None:
            out.append(Failed(it.failed))
            continue
        if it.busy:
            out.append(_BUSY)
            continue
        rows = next(written)
        out.append((it.msgs or [], rows))
        if any(m.decision.links for m in it.msgs or ()):
            links.append((it.msgs or [], rows, it.at))
    if links:
        await write_links(conn, links)
    return out


def _intake_keys(it: _Intake) -> list[Hashable]:
    """Two intakes of one call never share a statement (it may change a row once), nor two
    about one number (the second must read the first's rows)."""
    keys: list[Hashable] = [("number", n) for n in it.numbers()]
    if it.call is not None:
        keys.append(("call", it.call.pbx, it.call.call_id))
    return keys
