"""The calls view's storage on PostgreSQL: what each rule said about a call, calls by filters."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from agent.models import CallRecord, MessageState, RuleOutcome, Trigger
from agent.store.base import CallFilter, CallSummary
from agent.store.postgres.pool import PgPool, Statement, utc

_RECORD_FIELDS = frozenset(CallRecord.__dataclass_fields__)


#: One judgement: (call id, PBX, trigger, what each rule said, when): a call is (PBX, call id).
Judgement = tuple[str, str, Trigger, Sequence[RuleOutcome], datetime | None]


def outcomes_replace(q: Statement, judgements: Sequence[Judgement]) -> tuple[str, str]:
    """Each judgement's outcomes replace the positions they take (the first statement), and
    any left from a longer one go (the second): written as CTEs of one statement, the delete
    sees the rows as they were before the upsert. Rows in key order (two agents writing the
    same calls lock them in the same order); the text is the same for any number of them."""
    rows = sorted(((cid, pbx, trig.value, i, o, at) for cid, pbx, trig, outcomes, at in judgements
                   for i, o in enumerate(outcomes)), key=lambda r: r[:4])
    upsert = (
        "INSERT INTO rule_outcomes (call_id, pbx, trigger, position, rule, matched, reason,"
        " skipped, decided_at) SELECT u.c, u.x, u.t, u.p, u.r, u.m, u.rs, u.s::jsonb, u.at"
        f" FROM unnest({q.p([r[0] for r in rows], 'text[]')},"
        f" {q.p([r[1] for r in rows], 'text[]')},"
        f" {q.p([r[2] for r in rows], 'text[]')}, {q.p([r[3] for r in rows], 'int[]')},"
        f" {q.p([r[4].rule for r in rows], 'text[]')},"
        f" {q.p([r[4].matched for r in rows], 'bool[]')},"
        f" {q.p([r[4].reason for r in rows], 'text[]')},"
        f" {q.p([json.dumps(list(r[4].skipped)) for r in rows], 'text[]')},"
        f" {q.p([r[5] for r in rows], 'timestamptz[]')}) AS u(c, x, t, p, r, m, rs, s, at)"
        " ON CONFLICT (call_id, pbx, trigger, position) DO UPDATE SET rule = excluded.rule,"
        " matched = excluded.matched, reason = excluded.reason,"
        " skipped = excluded.skipped, decided_at = excluded.decided_at")
    delete = (
        "DELETE FROM rule_outcomes o USING unnest("
        f"{q.p([j[0] for j in judgements], 'text[]')},"
        f" {q.p([j[1] for j in judgements], 'text[]')},"
        f" {q.p([j[2].value for j in judgements], 'text[]')},"
        f" {q.p([len(j[3]) for j in judgements], 'int[]')}) AS d(c, x, t, n)"
        " WHERE o.call_id = d.c AND o.pbx = d.x AND o.trigger = d.t AND o.position >= d.n")
    return upsert, delete


async def replace_outcomes(conn: asyncpg.Connection, call_id: str, pbx: str, trigger: Trigger,
                           outcomes: Sequence[RuleOutcome], at: datetime) -> None:
    """One statement (one round trip): see ``outcomes_replace``."""
    q = Statement()
    upsert, delete = outcomes_replace(q, [(call_id, pbx, trigger, outcomes, at)])
    await conn.execute(f"WITH up AS ({upsert}) {delete}", *q.params)


class CallOps(PgPool):
    """As the SQLite store's CallOps: outcomes written when the rules run, replaced whole when
    a call is judged again for the same trigger."""

    async def record_rule_outcomes(
        self, call_id: str, trigger: Trigger, outcomes: Sequence[RuleOutcome], *, now: datetime,
        pbx: str,
    ) -> None:
        async with self._tx(single=True) as conn:
            await replace_outcomes(conn, call_id, pbx, trigger, outcomes, utc(now))

    async def rule_outcomes(self, call_id: str, *, pbx: str) -> list[RuleOutcome]:
        """Connect-time rules first, then the rules run when the call completed."""
        rows = await self._read(
            "SELECT rule, matched, reason, skipped::text AS skipped, trigger FROM rule_outcomes"
            " WHERE call_id = $1 AND pbx = $2 ORDER BY trigger = 'call_completed', position",
            call_id, pbx)
        return [RuleOutcome(r["rule"], r["matched"], r["reason"],
                            tuple(json.loads(r["skipped"])), Trigger(r["trigger"]))
                for r in rows]

    async def list_calls(self, filters: CallFilter) -> list[CallSummary]:
        """Calls newest first. A number finds the calls it made and the calls that texted it."""
        f = filters
        where: list[str] = []
        params: list[Any] = []

        def p(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if f.since is not None:
            where.append(f"c.ended_at >= {p(utc(f.since))}")
        if f.until is not None:
            where.append(f"c.ended_at < {p(utc(f.until))}")
        for column, value in (("c.call_id", f.call_id), ("c.queue", f.queue),
                              ("c.agent", f.agent), ("c.disposition", f.disposition),
                              ("c.pbx", f.pbx)):
            if value:
                where.append(f"{column} = {p(value)}")
        if f.number:
            if f.number.startswith("+"):
                n = p(f.number)
                where.append(f"(c.caller = {n} OR (c.call_id, c.pbx) IN"
                             f" (SELECT call_id, pbx FROM messages WHERE number = {n}))")
            else:
                t = p("%" + re.sub(r"\D", "", f.number))
                where.append(f"(c.caller LIKE {t} OR (c.call_id, c.pbx) IN"
                             f" (SELECT call_id, pbx FROM messages WHERE number LIKE {t}))")
        sql = "SELECT c.call_id, c.pbx, c.record::text AS record FROM calls c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY c.ended_at DESC NULLS LAST, c.call_id, c.pbx LIMIT {p(f.limit)}"
        sql += f" OFFSET {p(f.offset)}"
        calls = await self._read(sql, *params)
        ids = sorted({r["call_id"] for r in calls})
        by_call: dict[tuple[str, str], list[tuple[str, MessageState, str | None]]] = {}
        if ids:
            for m in await self._read(
                "SELECT call_id, pbx, rule, state, reason FROM messages"
                " WHERE call_id = ANY($1::text[]) ORDER BY created_at, id", ids):
                by_call.setdefault((m["call_id"], m["pbx"]), []).append(
                    (m["rule"], MessageState(m["state"]), m["reason"]))
        out = []
        for r in calls:
            data = json.loads(r["record"])
            known = {k: v for k, v in data.items() if k in _RECORD_FIELDS}
            record = CallRecord.from_dict(known)
            out.append(CallSummary(record, r["pbx"],
                                   tuple(by_call.get((r["call_id"], r["pbx"]), ()))))
        return out
