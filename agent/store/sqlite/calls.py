"""The calls view's storage: what each rule said about a call, and calls found by filters."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent.models import CallRecord, MessageState, RuleOutcome, Trigger
from agent.store.base import CallFilter, CallSummary
from agent.store.packing import (
    DISPOSITION_CODES,
    JSON_COMPACT,
    OUTCOMES_FORM,
    deflate_json,
    deflate_named,
    id_sql,
    inflate_outcomes,
    micros,
    names_id,
    unpack_record,
)
from agent.store.sqlite.rows import ts
from agent.store.sqlite.writer import StoreWriter
from agent.store.stamps import from_ts


def replace_outcomes(conn: sqlite3.Connection, call_id: str, pbx: str, trigger: Trigger,
                     outcomes: Sequence[RuleOutcome], at: str) -> None:
    """This judgement's outcomes (in the database thread, inside the caller's transaction).
    The latest decision wins: a record retried after a store outage, or a reconciled call, is
    judged again and its outcomes replace the earlier ones whole. A stored call's completion
    outcomes go in its row (schema 18); the others, and those of a call not stored, in
    rule_outcomes."""
    if trigger is Trigger.CALL_COMPLETED:
        packed = pack_named(conn, outcomes) if outcomes else None
        if conn.execute(
                "UPDATE calls SET outcomes = ?1,"
                " decided_at = CASE WHEN ?1 IS NOT NULL THEN ?2 - created_at END"
                " WHERE call_id = ?3 AND pbx = ?4",
                (packed, micros(from_ts(at)), call_id, pbx)).rowcount:
            drop_stray_outcomes(conn, call_id, pbx)
            return
    conn.execute("DELETE FROM rule_outcomes WHERE call_id = ? AND pbx = ? AND trigger = ?",
                 (call_id, pbx, trigger.value))
    if outcomes:
        conn.execute(
            "INSERT INTO rule_outcomes (call_id, pbx, trigger, outcomes, decided_at)"
            " VALUES (?,?,?,?,?)",
            (call_id, pbx, trigger.value, pack_named(conn, outcomes), micros(from_ts(at))))


def drop_stray_outcomes(conn: sqlite3.Connection, call_id: str, pbx: str) -> None:
    """The completion outcomes rule_outcomes held for a call judged before it was stored: its
    row holds them now (one place each, so the calls view reads one judgement)."""
    conn.execute("DELETE FROM rule_outcomes WHERE call_id = ? AND pbx = ?"
                 " AND trigger = 'call_completed'", (call_id, pbx))


def pack_outcomes(outcomes: Sequence[RuleOutcome]) -> bytes:
    """One judgement's outcomes as schemas 10-18 stored them: ``[[rule, matched, reason,
    skipped], ...]`` in order, each without its trailing empty fields, deflated with the
    engine's usual reasons as dictionary (packing.OUTCOMES_FORM): ~180 bytes of JSON in ~70."""
    return deflate_json(outcomes_json(outcomes), OUTCOMES_FORM)


def pack_named(conn: sqlite3.Connection, outcomes: Sequence[RuleOutcome]) -> bytes:
    """One judgement as stored since schema 20 (in the database thread, inside the caller's
    transaction): ``pack_outcomes``' JSON in packing's form 3, its list of rule names stored
    once in ``rule_names`` (a list is rules.yaml's, the same for every call it judges), ~55
    bytes a judgement of three rules in ~17. Not remembered between transactions: an id made
    in one that rolls back is not stored. Retention leaves rule_names be: a list of names is
    configuration, not a call's data, and one is added only when rules.yaml's names change."""
    names = [o.rule for o in outcomes]
    key = JSON_COMPACT.encode(names)
    row = conn.execute("SELECT id FROM rule_names WHERE names = ?", (key,)).fetchone()
    nid = row[0] if row is not None else conn.execute(
        "INSERT INTO rule_names (names) VALUES (?)", (key,)).lastrowid
    return deflate_named(outcomes_json(outcomes), nid, names)


def outcomes_json(outcomes: Sequence[RuleOutcome]) -> str:
    out: list[list[Any]] = []
    for o in outcomes:
        item: list[Any] = [o.rule, int(o.matched)]
        if o.reason is not None or o.skipped:
            item.append(o.reason)
        if o.skipped:
            item.append(list(o.skipped))
        out.append(item)
    return JSON_COMPACT.encode(out)


def unpack_outcomes(stored: bytes, trigger: Trigger,
                    names: Mapping[int, Sequence[str]] | None = None) -> list[RuleOutcome]:
    """``names``: the rule names lists a form 3 judgement may list (``names_of``)."""
    return [RuleOutcome(item[0], bool(item[1]), item[2] if len(item) > 2 else None,
                        tuple(item[3]) if len(item) > 3 else (), trigger)
            for item in json.loads(inflate_outcomes(stored, names or {}))]


def names_sql(blobs: Sequence[bytes]) -> tuple[str, list[int]] | None:
    """The query of the rule names lists ``blobs`` list (None: they list none)."""
    ids = sorted({found[0] for b in blobs if (found := names_id(b)) is not None})
    if not ids:
        return None
    return f"SELECT id, names FROM rule_names WHERE id IN ({','.join('?' * len(ids))})", ids


class CallOps(StoreWriter):
    """Rule outcomes are written when the rules run (``record_rule_outcomes``), so the calls view
    explains a call from what was decided then, not from today's rules.yaml."""

    async def record_rule_outcomes(
        self, call_id: str, trigger: Trigger, outcomes: Sequence[RuleOutcome], *, now: datetime,
        pbx: str,
    ) -> None:
        """The rules on ``trigger`` for this call, in order (each outcome's own trigger is
        ignored: one call is judged once per trigger)."""
        at = ts(now)

        def op(conn: sqlite3.Connection) -> None:
            replace_outcomes(conn, call_id, pbx, trigger, outcomes, at)

        await self._write_now(op)

    async def rule_outcomes(self, call_id: str, *, pbx: str) -> list[RuleOutcome]:
        """Connect-time rules first, then the rules run when the call completed."""
        rows = await self._read(
            "SELECT trigger, outcomes, trigger = 'call_completed' AS late FROM rule_outcomes"
            " WHERE call_id = ?1 AND pbx = ?2"
            " UNION ALL SELECT 'call_completed', outcomes, 1 FROM calls"
            " WHERE call_id = ?1 AND pbx = ?2 AND outcomes IS NOT NULL"
            " ORDER BY late", (call_id, pbx))
        names: dict[int, list[str]] = {}
        if (ask := names_sql([r["outcomes"] for r in rows])) is not None:
            names = {n["id"]: json.loads(n["names"]) for n in await self._read(*ask)}
        return [o for r in rows
                for o in unpack_outcomes(r["outcomes"], Trigger(r["trigger"]), names)]

    async def list_calls(self, filters: CallFilter) -> list[CallSummary]:
        """Calls newest first. A number finds the calls it made and the calls that texted it."""
        f = filters
        where: list[str] = []
        params: list[Any] = []
        if f.since is not None:
            where.append("c.ended_at >= ?")
            params.append(micros(f.since))
        if f.until is not None:
            where.append("c.ended_at < ?")
            params.append(micros(f.until))
        for column, value in (("c.call_id", f.call_id), ("c.queue", f.queue), ("c.agent", f.agent),
                              ("c.pbx", f.pbx)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if f.disposition in DISPOSITION_CODES:  # stored as its code (schema 18)
            where.append("c.disposition = ?")
            params.append(DISPOSITION_CODES[f.disposition])
        elif f.disposition:
            # Any other word as stored before codes (a digit string must not match a code).
            where.append("typeof(c.disposition) = 'text' AND c.disposition = ?")
            params.append(f.disposition)
        if f.number:
            if f.number.startswith("+"):
                where.append("(c.caller = ? OR (c.call_id, c.pbx) IN"
                             " (SELECT call_id, pbx FROM messages WHERE number = ?))")
                params += [f.number, f.number]
            else:
                tail = "%" + re.sub(r"\D", "", f.number)
                where.append("(c.caller LIKE ? OR (c.call_id, c.pbx) IN"
                             " (SELECT call_id, pbx FROM messages WHERE number LIKE ?))")
                params += [tail, tail]
        sql = "SELECT c.* FROM calls c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.ended_at DESC, c.call_id, c.pbx LIMIT ? OFFSET ?"
        calls = await self._read(sql, [*params, f.limit, f.offset])
        ids = sorted({r["call_id"] for r in calls})
        by_call: dict[tuple[str, str], list[tuple[str, MessageState, str | None]]] = {}
        if ids:
            for m in await self._read(
                "SELECT call_id, pbx, rule, state, reason FROM messages"
                f" WHERE call_id IN ({','.join('?' * len(ids))})"
                f" ORDER BY created_at, {id_sql('id')}", ids):
                by_call.setdefault((m["call_id"], m["pbx"]), []).append(
                    (m["rule"], MessageState(m["state"]), m["reason"]))
        out = []
        for r in calls:
            data = unpack_record(r, r["record"])
            known = {k: v for k, v in data.items() if k in _RECORD_FIELDS}
            record = CallRecord.from_dict(known)
            out.append(CallSummary(record, r["pbx"],
                                   tuple(by_call.get((r["call_id"], r["pbx"]), ()))))
        return out


_RECORD_FIELDS = frozenset(CallRecord.__dataclass_fields__)
