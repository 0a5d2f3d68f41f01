"""The write path of a call record on PostgreSQL: the call, its rows and their links at once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from agent.models import CallRecord, RuleOutcome
from agent.store.base import MessageRow, NewMessage
from agent.store.postgres.calls import replace_outcomes
from agent.store.postgres.messages import insert_row
from agent.store.postgres.pool import PgPool, utc
from agent.store.postgres.records import upsert_call


class IntakeOps(PgPool):
    """``record_call`` (see ``Store.record_call``): one transaction per call record."""

    async def record_call(
        self, call: CallRecord | None, messages: Sequence[NewMessage], *, now: datetime,
        outcomes: Sequence[RuleOutcome] | None = None,
    ) -> list[tuple[MessageRow, bool]]:
        at = utc(now)
        async with self._tx() as conn:
            if call is not None:
                await upsert_call(conn, call, at)
                if outcomes is not None:
                    await replace_outcomes(conn, call.call_id, call.trigger, outcomes, at)
            out: list[tuple[MessageRow, bool]] = []
            links: dict[str, tuple[str, str]] = {}  # code -> (url, message id)
            for m in messages:
                row, created = await insert_row(conn, m.decision, m.state, at, m.reason,
                                                m.detail, m.next_attempt_at, m.expires_at)
                out.append((row, created))
                if created:
                    for link in m.decision.links:
                        links.setdefault(link.code, (link.url, row.id))
            if links:
                await conn.executemany(
                    "INSERT INTO links (code, message_id, url, created_at) VALUES ($1,$2,$3,$4)"
                    " ON CONFLICT (code) DO NOTHING",
                    [(code, mid, url, at) for code, (url, mid) in links.items()])
            return out
