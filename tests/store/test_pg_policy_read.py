"""The policy read before each text costs the same on PostgreSQL whatever the number's history
(schema migration 11): it walked every row ever sent to the number (an agent texted a summary
per call has thousands by the hour), now a seek for the last send and its window's rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from agent.store.postgres import PostgresStore

NUMBER = "+919800000999"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def _history(conn: asyncpg.Connection, mine: int, others: int) -> None:
    """``mine`` texts to NUMBER, one a minute before NOW, and ``others`` to 20,000 other
    numbers over the same span: a year's table in miniature."""
    await conn.execute(
        "INSERT INTO messages (id, idempotency_key, call_id, rule, trigger, recipient_kind,"
        " number, template, gateway, sender_id, encoding, segments, category, state,"
        " created_at, submitted_at, updated_at)"
        " SELECT 'm' || i, 'k' || i, 'c' || i, 'agent-summary', 'call_completed', 'agent',"
        " CASE WHEN i <= $3::int THEN $1 ELSE '+91980' || (i % 20000) END, 't', 'smsc', 'ACME',"
        " 'GSM-7', 1, 'service', 'delivered', t, t, t"
        " FROM generate_series(1, $3::int + $4::int) AS i,"
        " LATERAL (SELECT $2::timestamptz - (i % $3::int + 1) * interval '1 minute' AS t) AS at",
        NUMBER, NOW, mine, others)
    await conn.execute("ANALYZE messages")


async def test_the_policy_read_does_not_grow_with_the_numbers_history(pg_url: str) -> None:
    async with PostgresStore(pg_url) as store:
        asked: list[tuple[str, tuple[Any, ...]]] = []
        read = store._read

        async def recording(sql: str, *args: Any) -> Any:  # the store's own statement
            asked.append((sql, args))
            return await read(sql, *args)

        store._read = recording  # type: ignore[method-assign]
        conn = await asyncpg.connect(pg_url)
        try:
            await _history(conn, 5_000, 200_000)
            facts = await store.policy_facts(NUMBER, "agent-summary", agents=True,
                                             sent_since=NOW - timedelta(hours=1))
            assert facts.last_sent_at == NOW - timedelta(minutes=1)
            assert facts.sent_to_number == 59  # inside the hour, the minute at its edge out
            [(sql, args)] = asked
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
        finally:
            await conn.close()
    top = json.loads(plan)[0]["Plan"]
    touched = int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])
    # a seek and an hour's 60 rows: tens of blocks; the number's 5,000 rows are hundreds
    assert touched < 100, json.dumps(top, indent=1)[:3000]
