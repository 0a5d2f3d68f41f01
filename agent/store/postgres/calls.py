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
from agent.store.postgres.pool import PgPool, utc

_RECORD_FIELDS = frozenset(CallRecord.__dataclass_fields__)


async def replace_outcomes(conn: asyncpg.Connection, call_id: str, trigger: Trigger,
                           outcomes: Sequence[RuleOutcome], at: datetime) -> None:
    """One statement (one round trip): this judgement's outcomes replace the positions they
    take, and any left from a longer one go."""
    await conn.execute(
        "WITH up AS (INSERT INTO rule_outcomes (call_id, trigger, position, rule,"
        " matched, reason, skipped, decided_at)"
        " SELECT $1, $2, u.p, u.r, u.m, u.rs, u.s::jsonb, $3 FROM unnest($4::int[],"
        " $5::text[], $6::bool[], $7::text[], $8::text[]) AS u(p, r, m, rs, s)"
        " ON CONFLICT (call_id, trigger, position) DO UPDATE SET rule = excluded.rule,"
        " matched = excluded.matched, reason = excluded.reason,"
        " skipped = excluded.skipped, decided_at = excluded.decided_at)"
        " DELETE FROM rule_outcomes WHERE call_id = $1 AND trigger = $2"
        " AND position >= $9",
        call_id, trigger.value, at, list(range(len(outcomes))),
        [o.rule for o in outcomes], [o.matched for o in outcomes],
        [o.reason for o in outcomes], [json.dumps(list(o.skipped)) for o in outcomes],
        len(outcomes),
    )


class CallOps(PgPool):
    """As the SQLite store's CallOps: outcomes written when the rules run, replaced whole when
    a call is judged again for the same trigger."""

    async def record_rule_outcomes(
        self, call_id: str, trigger: Trigger, outcomes: Sequence[RuleOutcome], *, now: datetime
    ) -> None:
        async with self._tx(single=True) as conn:
            await replace_outcomes(conn, call_id, trigger, outcomes, utc(now))

    async def rule_outcomes(self, call_id: str) -> list[RuleOutcome]:
        """Connect-time rules first, then the rules run when the call completed."""
        rows = await self._read(
            "SELECT rule, matched, reason, skipped::text AS skipped, trigger FROM rule_outcomes"
            " WHERE call_id = $1 ORDER BY trigger = 'call_completed', position", call_id)
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
                where.append(f"(c.caller = {n} OR c.call_id IN"
                             f" (SELECT call_id FROM messages WHERE number = {n}))")
            else:
                t = p("%" + re.sub(r"\D", "", f.number))
                where.append(f"(c.caller LIKE {t} OR c.call_id IN"
                             f" (SELECT call_id FROM messages WHERE number LIKE {t}))")
        sql = "SELECT c.call_id, c.record::text AS record FROM calls c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY c.ended_at DESC NULLS LAST, c.call_id LIMIT {p(f.limit)}"
        sql += f" OFFSET {p(f.offset)}"
        calls = await self._read(sql, *params)
        ids = [r["call_id"] for r in calls]
        by_call: dict[str, list[tuple[str, MessageState, str | None]]] = {}
        if ids:
            for m in await self._read(
                "SELECT call_id, rule, state, reason FROM messages"
                " WHERE call_id = ANY($1::text[]) ORDER BY created_at, id", ids):
                by_call.setdefault(m["call_id"], []).append(
                    (m["rule"], MessageState(m["state"]), m["reason"]))
        out = []
        for r in calls:
            data = json.loads(r["record"])
            known = {k: v for k, v in data.items() if k in _RECORD_FIELDS}
            record = CallRecord.from_dict(known)
            out.append(CallSummary(record, record.pbx,
                                   tuple(by_call.get(r["call_id"], ()))))
        return out
