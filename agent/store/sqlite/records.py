"""Everything beside the outbox: call records, policy facts, opt-outs and DND, replies, links."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from agent.errors import StoreError
from agent.models import CallRecord, InboundSms, RuleOutcome, Trigger
from agent.store.base import FactsAsk, LinkRow, ListEntry, ListEvent, PolicyFacts, ReplyRow
from agent.store.dndcsv import DndImport
from agent.store.packing import (
    DISPOSITION_CODES,
    RECIPIENT_CODES,
    TRIGGER_CODES,
    from_micros,
    id_key,
    id_sql,
    id_word,
    label_word,
    micros,
    pack_record,
    unpack_record,
)
from agent.store.sqlite.calls import drop_stray_outcomes, pack_named, replace_outcomes
from agent.store.sqlite.rows import _dt, _now, _time, ts
from agent.store.sqlite.writer import StoreWriter

# "Sent" for cooldown and rate limits: anything that reached, or is on its way to, a gateway.
# The WHERE of the partial indexes the policy read uses (migration 10): change both together.
_SENT = "(submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"


def upsert_call(conn: sqlite3.Connection, record: CallRecord, at: str,
                outcomes: Sequence[RuleOutcome] | None = None) -> None:
    """The call's row (in the database thread, inside the caller's transaction); a later
    record of the call replaces it. Its times are integer microseconds (schema 11), its trigger
    and disposition codes (schema 18). ``outcomes`` (what the rules said on the record's
    trigger, None: not given) replace the earlier judgement, in the same statement when the
    call completed (the row holds them, schema 18): no second write on the record's path."""
    completed = outcomes is not None and record.trigger is Trigger.CALL_COMPLETED
    created = micros(_dt(at))
    values = (record.call_id, pack_record(record), TRIGGER_CODES[record.trigger.value],
              DISPOSITION_CODES[record.disposition.value], record.queue, record.caller,
              micros(record.ended_at) if record.ended_at else None, created, record.agent,
              record.pbx)
    if not completed:
        conn.execute(_UPSERT_CALL, values)
        if outcomes is not None:
            replace_outcomes(conn, record.call_id, record.pbx, record.trigger, outcomes, at)
        return
    assert outcomes is not None
    packed = pack_named(conn, outcomes) if outcomes else None
    conn.execute(_UPSERT_JUDGED_CALL, (*values, packed, None if packed is None else 0))
    drop_stray_outcomes(conn, record.call_id, record.pbx)


_UPSERT_CALL = (
    "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller, ended_at,"
    " created_at, agent, pbx) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(call_id, pbx) DO UPDATE"
    " SET record=excluded.record, trigger=excluded.trigger,"
    " disposition=excluded.disposition, queue=excluded.queue,"
    " caller=excluded.caller, ended_at=excluded.ended_at, agent=excluded.agent")
# decided_at counts from the row's created_at, kept from its first insert: excluded's is now.
_UPSERT_JUDGED_CALL = (
    "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller, ended_at,"
    " created_at, agent, pbx, outcomes, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT(call_id, pbx) DO UPDATE"
    " SET record=excluded.record, trigger=excluded.trigger,"
    " disposition=excluded.disposition, queue=excluded.queue,"
    " caller=excluded.caller, ended_at=excluded.ended_at, agent=excluded.agent,"
    " outcomes=excluded.outcomes, decided_at=CASE WHEN excluded.outcomes IS NOT NULL"
    " THEN excluded.created_at - calls.created_at END")


def facts_query(ask: FactsAsk) -> tuple[str, dict[str, Any]]:
    """The one statement that reads an ask's ``PolicyFacts`` (on either connection)."""
    sql = (
        "SELECT EXISTS(SELECT 1 FROM opt_outs WHERE number = :n),"
        " EXISTS(SELECT 1 FROM dnd WHERE number = :n),"
        " (SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
        f"   WHERE number = :n AND rule = :r AND {_SENT})"
    )
    params: dict[str, Any] = {"n": ask.number, "r": ask.rule}
    if ask.sent_since is not None:
        sql += (f", (SELECT COUNT(*) FROM messages WHERE number = :n AND {_SENT}"
                f"   AND (recipient_kind = {RECIPIENT_CODES['agent']}) = :a"
                "   AND COALESCE(submitted_at, created_at) > :s)")
        params |= {"a": ask.agents, "s": micros(ask.sent_since)}
    return sql, params


def facts_of(ask: FactsAsk, r: sqlite3.Row | tuple[Any, ...]) -> PolicyFacts:
    return PolicyFacts(bool(r[0]), bool(r[1]), _time(r[2]),
                       int(r[3]) if ask.sent_since is not None else 0)


def read_facts(conn: sqlite3.Connection, ask: FactsAsk) -> PolicyFacts:
    """An ask's facts on the write connection (in the writer thread, inside its transaction:
    every row written before, committed or earlier in this batch, is seen)."""
    sql, params = facts_query(ask)
    return facts_of(ask, conn.execute(sql, params).fetchone())


class RecordOps(DndImport, StoreWriter):
    """Calls, the facts policy decisions read, opt-outs, DND, replies, links and clicks."""

    # ---- calls ----------------------------------------------------------------------------

    async def save_call(self, record: CallRecord, *, now: datetime | None = None) -> None:
        at = ts(now or _now())

        def op(conn: sqlite3.Connection) -> None:
            upsert_call(conn, record, at)

        await self._write_now(op)

    async def get_call(self, call_id: str, *, pbx: str) -> CallRecord | None:
        rows = await self._read("SELECT * FROM calls WHERE call_id = ? AND pbx = ?",
                                (call_id, pbx))
        return CallRecord.from_dict(unpack_record(rows[0], rows[0]["record"])) if rows else None

    async def newest_call_end(self, pbx: str | None = None) -> datetime | None:
        """When the newest call this store knows (on ``pbx``, if given) ended; None for a store
        that never ran."""
        # A call stored only as connected (no end yet) counts from when it was stored: the
        # agent was following the PBX live then, and that call still needs its completion.
        sql = "SELECT max(COALESCE(ended_at, created_at)) AS t FROM calls"
        rows = await (self._read(sql + " WHERE pbx = ?", (pbx,)) if pbx is not None
                      else self._read(sql, ()))
        return from_micros(rows[0]["t"]) if rows and rows[0]["t"] is not None else None

    # ---- policy facts ---------------------------------------------------------------------

    async def last_sent_at(self, number: str, rule: str) -> datetime | None:
        rows = await self._read(
            f"SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
            f" WHERE number = ? AND rule = ? AND {_SENT}",
            (number, rule),
        )
        return _time(rows[0][0])

    async def count_sent_since(self, number: str | None, since: datetime) -> int:
        # created_at <= submitted_at, so this equals COALESCE(submitted_at, created_at) >= since
        # while letting both indexes serve it.
        sql = (
            f"SELECT COUNT(*) FROM messages WHERE {_SENT}"
            " AND (created_at >= ? OR submitted_at >= ?)"
        )
        params: list[Any] = [micros(since), micros(since)]
        if number is not None:
            sql += " AND number = ?"
            params.append(number)
        rows = await self._read(sql, params)
        return int(rows[0][0])

    async def policy_facts(self, number: str, rule: str, *, sent_since: datetime | None = None,
                           agents: bool = False) -> PolicyFacts:
        """``sent_since``: also count the texts to ``number`` sent after it to its audience
        (agents, or everyone else): the per-number rate limit's window, read from the
        number's own rows (index messages_number) instead of kept in memory per number."""
        ask = FactsAsk(number, rule, sent_since, agents)
        return facts_of(ask, (await self._read(*facts_query(ask)))[0])

    async def sent_since(self, since: datetime) -> list[tuple[str, str, datetime]]:
        """``(recipient_kind, number, sent_at)`` of every text sent since ``since``: what the
        in-memory rate-limit counters start from."""
        rows = await self._read(
            "SELECT recipient_kind, number, COALESCE(submitted_at, created_at) FROM messages"
            f" WHERE {_SENT} AND number IS NOT NULL AND (created_at >= ? OR submitted_at >= ?)",
            (micros(since), micros(since)),
        )
        return [(label_word("recipient_kind", r[0]), r[1], at) for r in rows
                if (at := _time(r[2])) is not None]

    async def segments_sent_since(
        self, since: datetime
    ) -> list[tuple[str, str, str, int, datetime]]:
        """``(rule, gateway, number, segments, sent_at)`` of every text sent since ``since``:
        what the in-memory spend totals start from (sms/spend.py)."""
        rows = await self._read(
            "SELECT rule, gateway, number, segments, COALESCE(submitted_at, created_at)"
            f" FROM messages WHERE {_SENT} AND number IS NOT NULL"
            " AND (created_at >= ? OR submitted_at >= ?)",
            (micros(since), micros(since)),
        )
        return [(r[0], r[1], r[2], int(r[3] or 1), at) for r in rows
                if (at := _time(r[4])) is not None]

    async def is_opted_out(self, number: str) -> bool:
        return bool(await self._read("SELECT 1 FROM opt_outs WHERE number = ?", (number,)))

    async def opt_out(self, number: str, *, source: str, now: datetime | None = None) -> None:
        params = (number, ts(now or _now()), source)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO opt_outs (number, at, source) VALUES (?,?,?) ON CONFLICT(number)"
                " DO UPDATE SET at = excluded.at, source = excluded.source",
                params,
            )
            _list_event(conn, [(number, "optout", "add", params[1], source)])

        await self._write_now(op)

    async def opt_in(self, number: str, *, source: str = "unknown") -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            gone = bool(conn.execute(
                "DELETE FROM opt_outs WHERE number = ? RETURNING number", (number,)).fetchall())
            if gone:
                _list_event(conn, [(number, "optout", "remove", ts(_now()), source)])
            return gone

        return await self._write_now(op)

    async def is_dnd(self, number: str) -> bool:
        return bool(await self._read("SELECT 1 FROM dnd WHERE number = ?", (number,)))

    async def set_language(self, number: str, language: str, *, source: str,
                           now: datetime | None = None) -> None:
        params = (number, language, ts(now or _now()), source)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO language_prefs (number, language, at, source) VALUES (?,?,?,?)"
                " ON CONFLICT(number) DO UPDATE SET language = excluded.language,"
                " at = excluded.at, source = excluded.source", params)

        await self._write_now(op)

    async def language_preferences(self) -> dict[str, str]:
        """Every number's language (read once at start: the record path looks them up in
        memory, so deciding a call never waits for the database)."""
        rows = await self._read("SELECT number, language FROM language_prefs")
        return {r[0]: r[1] for r in rows}

    async def add_dnd(
        self, numbers: Iterable[str], *, source: str, now: datetime | None = None
    ) -> int:
        at = ts(now or _now())
        rows = [(n, at, source) for n in dict.fromkeys(numbers)]

        def op(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "INSERT INTO dnd (number, at, source) VALUES (?,?,?) ON CONFLICT(number)"
                " DO UPDATE SET at = excluded.at, source = excluded.source",
                rows,
            )
            _list_event(conn, [(n, "dnd", "add", a, s) for n, a, s in rows])
            return len(rows)

        return await self._write_now(op)

    async def remove_dnd(self, number: str, *, source: str = "unknown") -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            gone = bool(conn.execute(
                "DELETE FROM dnd WHERE number = ? RETURNING number", (number,)).fetchall())
            if gone:
                _list_event(conn, [(number, "dnd", "remove", ts(_now()), source)])
            return gone

        return await self._write_now(op)

    async def list_numbers(self, which: str, *, limit: int = 1000) -> list[ListEntry]:
        """The opt-out (``optout``) or DND (``dnd``) list, newest first."""
        table = {"optout": "opt_outs", "dnd": "dnd"}[which]
        rows = await self._read(
            f"SELECT number, at, source FROM {table} ORDER BY at DESC, number LIMIT ?", (limit,)
        )
        return [ListEntry(r["number"], _dt(r["at"]), r["source"]) for r in rows]

    async def list_history(self, number: str | None = None, *, limit: int = 100
                           ) -> list[ListEvent]:
        """Changes to the lists (of one number, or all), newest first: who did what, when."""
        sql, params = "SELECT * FROM list_events", []
        if number is not None:
            sql, params = sql + " WHERE number = ?", [number]
        rows = await self._read(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [ListEvent(r["number"], r["list"], r["action"], _dt(r["at"]), r["who"])
                for r in rows]

    # ---- replies, links -------------------------------------------------------------------

    async def replies_to(self, message_ids: Sequence[str]) -> list[ReplyRow]:
        ids = [id_key(i) for i in list(message_ids)[:500]]
        if not ids:
            return []
        rows = await self._read(
            f"SELECT * FROM replies WHERE message_id IN ({','.join('?' * len(ids))})"
            " ORDER BY received_at, id", ids)
        return [ReplyRow(r["id"], id_word(r["message_id"]), r["number"], r["text"], r["keyword"],
                         r["action"], _dt(r["received_at"])) for r in rows]

    async def add_reply(
        self,
        sms: InboundSms,
        *,
        message_id: str | None = None,
        keyword: str | None = None,
        action: str | None = None,
        sentiment: float | None = None,
        rating: int | None = None,
    ) -> int:
        params = (
            None if message_id is None else id_key(message_id),
            sms.gateway,
            sms.sender,
            sms.recipient,
            sms.text,
            keyword,
            action,
            sentiment,
            rating,
            ts(sms.received_at),
        )

        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO replies (message_id, gateway, number, recipient, text, keyword,"
                " action, sentiment, rating, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " RETURNING id",
                params,
            ).fetchone()
            assert row is not None
            return int(row["id"])

        return await self._write_now(op)

    async def add_link(
        self, code: str, url: str, *, message_id: str | None, now: datetime | None = None
    ) -> None:
        at = micros(now or _now())

        def op(conn: sqlite3.Connection) -> None:
            # The link names its message by ref (schema 24), so the message must be there.
            ref = None
            if message_id is not None:
                row = conn.execute("SELECT ref FROM messages WHERE id = ?",
                                   (id_key(message_id),)).fetchone()
                if row is None:
                    raise StoreError(f"link {code}: no message {message_id}")
                ref = row[0]
            conn.execute("INSERT INTO links (code, msg, url, created_at) VALUES (?,?,?,?)",
                         (code, ref, url, at))

        await self._write_now(op)

    async def resolve_link(self, code: str) -> LinkRow | None:
        rows = await self._read(
            f"SELECT l.code, {id_sql('m.id')}, l.url, l.created_at FROM links l"
            " LEFT JOIN messages m ON m.ref = l.msg WHERE l.code = ?", (code,))
        if not rows:
            return None
        r = rows[0]
        return LinkRow(r[0], r[1], r[2], from_micros(r[3]))

    async def add_click(
        self, code: str, *, at: datetime | None = None, user_agent: str | None = None
    ) -> None:
        params = (code, ts(at or _now()), user_agent)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO clicks (code, at, user_agent) VALUES (?,?,?)", params)

        await self._write_now(op)


def _list_event(conn: sqlite3.Connection,
                      rows: Sequence[tuple[str, str, str, str, str]]) -> None:
    """(number, list, action, at, who): written in the op that changed the list."""
    conn.executemany(
        "INSERT INTO list_events (number, list, action, at, who) VALUES (?,?,?,?,?)", rows)
