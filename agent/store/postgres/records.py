"""Everything beside the outbox, on PostgreSQL: call records, policy facts, opt-outs and DND,
replies, links and clicks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import asyncpg

from agent.errors import StoreError
from agent.models import CallRecord, InboundSms
from agent.store.base import LinkRow, ListEntry, ListEvent, PeerSend, PolicyFacts, ReplyRow
from agent.store.dndcsv import DndImport
from agent.store.postgres.group import Grouped
from agent.store.postgres.numbers import SENT as _SENT
from agent.store.postgres.pool import PgPool, Statement, utc

#: One policy read: (number, rule, sent since, to agents).
_FactsAsk = tuple[str, str, datetime | None, bool]


#: Numbers per transaction of ``add_dnd`` (each holds their locks until it commits).
_DND_CHUNK = 500


def _now() -> datetime:
    return datetime.now(UTC)


def call_upsert(q: Statement, calls: Sequence[tuple[CallRecord, datetime | None]]) -> str:
    """The calls' rows (``(record, stored at)``), in call order so that two agents writing
    the same calls lock them in the same order; a later record of a call replaces it (a
    statement, or a CTE). The text is the same for any number of calls (arrays)."""
    calls = sorted(calls, key=lambda c: (c[0].call_id, c[0].pbx))  # the key's order
    columns = (
        ("call_id", "text", [c.call_id for c, _ in calls]),
        ("record", "text", [json.dumps(c.to_dict(), separators=(",", ":")) for c, _ in calls]),
        ("trigger", "text", [c.trigger.value for c, _ in calls]),
        ("disposition", "text", [c.disposition.value for c, _ in calls]),
        ("queue", "text", [c.queue for c, _ in calls]),
        ("caller", "text", [c.caller for c, _ in calls]),
        ("ended_at", "timestamptz", [utc(c.ended_at) for c, _ in calls]),
        ("created_at", "timestamptz", [at for _, at in calls]),
        ("agent", "text", [c.agent for c, _ in calls]),
        ("pbx", "text", [c.pbx for c, _ in calls]),
    )
    names = ", ".join(name for name, _, _ in columns)
    arrays = ", ".join(q.p(values, f"{t}[]") for _, t, values in columns)
    rest = ", ".join(f"u.{name}" for name, _, _ in columns[2:])
    return (
        f"INSERT INTO calls ({names}) SELECT u.call_id, u.record::jsonb, {rest}"
        f" FROM unnest({arrays}) AS u({names})"
        " ON CONFLICT (call_id, pbx) DO UPDATE SET record = excluded.record,"
        " trigger = excluded.trigger, disposition = excluded.disposition,"
        " queue = excluded.queue, caller = excluded.caller, ended_at = excluded.ended_at,"
        " agent = excluded.agent")


async def upsert_call(conn: asyncpg.Connection, record: CallRecord, at: datetime | None) -> None:
    """The call's row, inside the caller's transaction."""
    q = Statement()
    await conn.execute(call_upsert(q, [(record, at)]), *q.params)


class RecordOps(DndImport, PgPool):
    """Calls, the facts policy decisions read, opt-outs, DND, replies, links and clicks."""

    # ---- calls ----------------------------------------------------------------------------

    async def save_call(self, record: CallRecord, *, now: datetime | None = None) -> None:
        async with self._tx(single=True) as conn:
            await upsert_call(conn, record, utc(now) or _now())

    async def get_call(self, call_id: str, *, pbx: str) -> CallRecord | None:
        rows = await self._read("SELECT record::text FROM calls WHERE call_id = $1 AND pbx = $2",
                                call_id, pbx)
        return CallRecord.from_dict(json.loads(rows[0][0])) if rows else None

    async def newest_call_end(self, pbx: str | None = None) -> datetime | None:
        """When the newest call this store knows (on ``pbx``, if given) ended; None for a store
        that never ran. Agents of several PBXs share the database: each asks for its own."""
        # A call stored only as connected counts from when it was stored (as in SQLite).
        sql = "SELECT max(COALESCE(ended_at, created_at)) FROM calls"
        rows = await (self._read(sql + " WHERE pbx = $1", pbx) if pbx is not None
                      else self._read(sql))
        return rows[0][0] if rows else None

    # ---- policy facts ---------------------------------------------------------------------

    async def last_sent_at(self, number: str, rule: str) -> datetime | None:
        rows = await self._read(
            f"SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
            f" WHERE number = $1 AND rule = $2 AND {_SENT}",
            number, rule,
        )
        return rows[0][0]

    async def count_sent_since(self, number: str | None, since: datetime) -> int:
        # created_at <= submitted_at, so this equals COALESCE(submitted_at, created_at) >= since
        # while letting both indexes serve it.
        sql = f"SELECT COUNT(*) FROM messages WHERE {_SENT} AND (created_at >= $1 OR submitted_at >= $1)"
        if number is None:
            rows = await self._read(sql, utc(since))
        else:
            rows = await self._read(sql + " AND number = $2", utc(since), number)
        return int(rows[0][0])

    _facts: Grouped[_FactsAsk, PolicyFacts] | None = None

    async def policy_facts(self, number: str, rule: str, *, sent_since: datetime | None = None,
                           agents: bool = False) -> PolicyFacts:
        """``sent_since``: also count the texts to ``number`` sent after it to its audience
        (agents, or everyone else): the per-number rate limit's window, read from the
        number's own rows, so every agent sharing the database counts them all. The reads
        that arrive while one is in flight go together, as one statement (group.py)."""
        if self._facts is None:
            self._facts = Grouped(self._read_facts)
        return await self._facts((number, rule, utc(sent_since), agents))

    async def _read_facts(self, asks: Sequence[_FactsAsk]) -> list[PolicyFacts]:
        rows = await self._read(
            "SELECT EXISTS(SELECT 1 FROM opt_outs WHERE number = u.n),"
            " EXISTS(SELECT 1 FROM dnd WHERE number = u.n),"
            " (SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
            f"   WHERE number = u.n AND rule = u.r AND {_SENT}),"
            " CASE WHEN u.since IS NULL THEN 0 ELSE"
            f"  (SELECT COUNT(*) FROM messages WHERE number = u.n AND {_SENT}"
            "   AND (recipient_kind = 'agent') = u.a"
            "   AND COALESCE(submitted_at, created_at) > u.since) END"
            " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bool[])"
            " WITH ORDINALITY AS u(n, r, since, a, i) ORDER BY u.i",
            [a[0] for a in asks], [a[1] for a in asks], [a[2] for a in asks],
            [a[3] for a in asks])
        return [PolicyFacts(bool(r[0]), bool(r[1]), r[2], int(r[3])) for r in rows]

    async def sent_since(self, since: datetime) -> list[tuple[str, str, datetime]]:
        """``(recipient_kind, number, sent_at)`` of every text sent since ``since``: what the
        in-memory rate-limit counters start from."""
        rows = await self._read(
            "SELECT recipient_kind, number, COALESCE(submitted_at, created_at) FROM messages"
            f" WHERE {_SENT} AND number IS NOT NULL AND (created_at >= $1 OR submitted_at >= $1)",
            utc(since),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def segments_sent_since(
        self, since: datetime
    ) -> list[tuple[str, str, str, int, datetime]]:
        """``(rule, gateway, number, segments, sent_at)`` of every text sent since ``since``:
        what the in-memory spend totals start from (sms/spend.py)."""
        rows = await self._read(
            "SELECT rule, gateway, number, segments, COALESCE(submitted_at, created_at)"
            f" FROM messages WHERE {_SENT} AND number IS NOT NULL"
            " AND (created_at >= $1 OR submitted_at >= $1)",
            utc(since),
        )
        return [(r[0], r[1], r[2], int(r[3] or 1), r[4]) for r in rows]

    async def sends_by_others(self, since: datetime) -> list[PeerSend]:
        """The texts on their way out whose rows other agents wrote since ``since`` (index
        messages_created): what this agent counts of theirs (dispatch/peers.py)."""
        rows = await self._read(
            "SELECT id, recipient_kind, number, rule, gateway, segments, created_at FROM messages"
            f" WHERE created_at >= $1 AND {_SENT} AND number IS NOT NULL"
            " AND written_by IS DISTINCT FROM $2",
            utc(since), self.writer,
        )
        return [PeerSend(r[0], r[1], r[2], r[3], r[4], int(r[5] or 1), r[6]) for r in rows]

    async def is_opted_out(self, number: str) -> bool:
        return bool(await self._read("SELECT 1 FROM opt_outs WHERE number = $1", number))

    async def opt_out(self, number: str, *, source: str, now: datetime | None = None) -> None:
        """Under the number's lock (numbers.py), as decisions about it are: an opt-out either
        commits before a decision reads the number's facts (and is honoured) or waits until
        that decision's rows are committed."""
        async with self._tx(numbers=[number]) as conn:
            await conn.execute(
                "INSERT INTO opt_outs (number, at, source) VALUES ($1,$2,$3) ON CONFLICT (number)"
                " DO UPDATE SET at = excluded.at, source = excluded.source",
                number, utc(now) or _now(), source,
            )
            await _list_event(conn, [(number, "optout", "add", utc(now) or _now(), source)])

    async def opt_in(self, number: str, *, source: str = "unknown") -> bool:
        async with self._tx() as conn:
            gone = bool(await conn.fetch(
                "DELETE FROM opt_outs WHERE number = $1 RETURNING number", number
            ))
            if gone:
                await _list_event(conn, [(number, "optout", "remove", _now(), source)])
            return gone

    async def is_dnd(self, number: str) -> bool:
        return bool(await self._read("SELECT 1 FROM dnd WHERE number = $1", number))

    async def set_language(self, number: str, language: str, *, source: str,
                           now: datetime | None = None) -> None:
        async with self._tx(single=True) as conn:
            await conn.execute(
                "INSERT INTO language_prefs (number, language, at, source) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (number) DO UPDATE SET language = excluded.language,"
                " at = excluded.at, source = excluded.source",
                number, language, utc(now) or _now(), source)

    async def language_preferences(self) -> dict[str, str]:
        """Every number's language (read once at start: the record path looks them up in
        memory, so deciding a call never waits for the database)."""
        return {r[0]: r[1] for r in await self._read(
            "SELECT number, language FROM language_prefs")}

    async def add_dnd(
        self, numbers: Iterable[str], *, source: str, now: datetime | None = None
    ) -> int:
        """Each number under its lock, as an opt-out (``opt_out``). A long list (an imported
        registry) goes in transactions of ``_DND_CHUNK`` numbers: a transaction's locks take
        room in the server's shared lock table. Adding a number twice is harmless, so an
        import that failed part way is completed by running it again."""
        at = utc(now) or _now()
        rows = [(n, at, source) for n in dict.fromkeys(numbers)]
        for i in range(0, len(rows), _DND_CHUNK):
            chunk = rows[i:i + _DND_CHUNK]
            async with self._tx(numbers=[n for n, _, _ in chunk]) as conn:
                await conn.executemany(
                    "INSERT INTO dnd (number, at, source) VALUES ($1,$2,$3) ON CONFLICT (number)"
                    " DO UPDATE SET at = excluded.at, source = excluded.source",
                    chunk,
                )
                await _list_event(conn, [(n, "dnd", "add", a, s) for n, a, s in chunk])
        return len(rows)

    async def remove_dnd(self, number: str, *, source: str = "unknown") -> bool:
        async with self._tx() as conn:
            gone = bool(await conn.fetch(
                "DELETE FROM dnd WHERE number = $1 RETURNING number", number
            ))
            if gone:
                await _list_event(conn, [(number, "dnd", "remove", _now(), source)])
            return gone

    async def list_numbers(self, which: str, *, limit: int = 1000) -> list[ListEntry]:
        """The opt-out (``optout``) or DND (``dnd``) list, newest first."""
        table = {"optout": "opt_outs", "dnd": "dnd"}[which]
        rows = await self._read(
            f"SELECT number, at, source FROM {table} ORDER BY at DESC, number LIMIT $1", limit)
        return [ListEntry(r["number"], r["at"], r["source"]) for r in rows]

    async def list_history(self, number: str | None = None, *, limit: int = 100
                           ) -> list[ListEvent]:
        """Changes to the lists (of one number, or all), newest first: who did what, when."""
        if number is None:
            rows = await self._read("SELECT * FROM list_events ORDER BY id DESC LIMIT $1", limit)
        else:
            rows = await self._read("SELECT * FROM list_events WHERE number = $1"
                                    " ORDER BY id DESC LIMIT $2", number, limit)
        return [ListEvent(r["number"], r["list"], r["action"], r["at"], r["who"]) for r in rows]

    # ---- replies, links -------------------------------------------------------------------

    async def replies_to(self, message_ids: Sequence[str]) -> list[ReplyRow]:
        ids = list(message_ids)[:500]
        if not ids:
            return []
        rows = await self._read("SELECT * FROM replies WHERE message_id = ANY($1::text[])"
                                " ORDER BY received_at, id", ids)
        return [ReplyRow(r["id"], r["message_id"], r["number"], r["text"], r["keyword"],
                         r["action"], r["received_at"]) for r in rows]

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
        async with self._tx() as conn:
            reply_id = await conn.fetchval(
                "INSERT INTO replies (message_id, gateway, number, recipient, text, keyword,"
                " action, sentiment, rating, received_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
                " RETURNING id",
                message_id, sms.gateway, sms.sender, sms.recipient, sms.text, keyword, action,
                sentiment, rating, utc(sms.received_at),
            )
        return int(reply_id)

    async def add_link(
        self, code: str, url: str, *, message_id: str | None, now: datetime | None = None
    ) -> None:
        # A link that names a message names one that is there, as SQLite's must (its link
        # holds the message's ref, schema 24): refused the same way, not stored dangling.
        async with self._tx(single=True) as conn:
            status = await conn.execute(
                "INSERT INTO links (code, message_id, url, created_at) SELECT $1, $2, $3, $4"
                " WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM messages WHERE id = $2)",
                code, message_id, url, utc(now) or _now(),
            )
        if status == "INSERT 0 0":
            raise StoreError(f"link {code}: no message {message_id}")

    async def resolve_link(self, code: str) -> LinkRow | None:
        rows = await self._read("SELECT * FROM links WHERE code = $1", code)
        if not rows:
            return None
        r = rows[0]
        return LinkRow(r["code"], r["message_id"], r["url"], r["created_at"])

    async def add_click(
        self, code: str, *, at: datetime | None = None, user_agent: str | None = None
    ) -> None:
        async with self._tx(single=True) as conn:
            await conn.execute(
                "INSERT INTO clicks (code, at, user_agent) VALUES ($1,$2,$3)",
                code, utc(at) or _now(), user_agent,
            )


async def _list_event(conn: asyncpg.Connection,
                      rows: Sequence[tuple[str, str, str, datetime, str]]) -> None:
    """(number, list, action, at, who): written in the transaction that changed the list."""
    await conn.executemany(
        "INSERT INTO list_events (number, list, action, at, who) VALUES ($1,$2,$3,$4,$5)", rows)
