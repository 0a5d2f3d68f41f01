"""The write path of a call record: the call, its message rows and their links in one op."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from agent.models import CallRecord, RuleOutcome
from agent.store.base import Committed, Decide, FactsAsk, MessageRow, NewMessage
from agent.store.sqlite.messages import insert_stored
from agent.store.sqlite.records import read_facts, upsert_call
from agent.store.sqlite.rows import _message, ts, us
from agent.store.sqlite.writer import StoreWriter


class IntakeOps(StoreWriter):
    """``record_call``: one op, so one savepoint of the writer's grouped transaction. Records
    written by concurrent callers share that transaction's single commit. The rules' outcomes
    for the call ride in the same op, and so does the claim of a text's first submit
    (``NewMessage.claim_via``): from hangup to submit_sm a record costs one commit, not two."""

    async def record_call(
        self, call: CallRecord | None, messages: Sequence[NewMessage], *, now: datetime,
        outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[tuple[MessageRow, bool]]:
        at = ts(now)
        msgs = list(messages)

        def op(conn: sqlite3.Connection) -> list[tuple[MessageRow, bool]]:
            return write_record(conn, call, msgs, at, outcomes)

        return await self._write_now(op)

    async def decide_and_record(
        self, call: CallRecord | None, asks: Sequence[FactsAsk | None], decide: Decide, *,
        now: datetime, outcomes: Sequence[RuleOutcome] | None = None,
        committed: Committed | None = None,
    ) -> tuple[list[NewMessage], list[tuple[MessageRow, bool]]]:
        """``Outbox.decide_and_record`` in one op: the facts are read on the write connection
        inside the transaction that writes the rows, so the record costs one hop into the
        writer thread and one back (no read hop before it), and no write committed or queued
        before it can be missed (an opt-out, a text to the same number). ``committed`` runs
        in the writer's answer to the loop, before this caller resumes."""
        at = ts(now)
        wanted = list(asks)

        def op(conn: sqlite3.Connection
               ) -> tuple[list[NewMessage], list[tuple[MessageRow, bool]]]:
            msgs = decide([None if a is None else read_facts(conn, a) for a in wanted])
            return msgs, write_record(conn, call, msgs, at, outcomes)

        return await self._write_now(op, then=committed)


def write_record(conn: sqlite3.Connection, call: CallRecord | None, msgs: list[NewMessage],
                 at: str, outcomes: Sequence[RuleOutcome] | None
                 ) -> list[tuple[MessageRow, bool]]:
    """The call, what each rule said, its rows (a queued one claimed when it holds a slot) and
    their links, inside the writer thread's transaction."""
    if call is not None:
        upsert_call(conn, call, at, outcomes)
    out: list[tuple[MessageRow, bool]] = []
    links: dict[str, tuple[str, int]] = {}  # code -> (url, message ref)
    for m in msgs:
        # A new row the claim would take is written claimed (no second write of it)
        stored, created = insert_stored(conn, m.decision, m.state, at, m.reason, m.detail,
                                        m.next_attempt_at, m.expires_at, m.claim_via)
        out.append((_message(stored), created))
        if created:
            for link in m.decision.links:
                links.setdefault(link.code, (link.url, stored["ref"]))
    if links:
        created = us(at)
        conn.executemany(
            "INSERT OR IGNORE INTO links (code, msg, url, created_at) VALUES (?,?,?,?)",
            [(code, ref, url, created) for code, (url, ref) in links.items()])
    return out
