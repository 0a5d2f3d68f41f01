"""Delivery receipts on PostgreSQL: storing them, matching them to messages, moving those.

A receipt may reach any agent (whichever holds the SMPP bind or receives the webhook); the
message it belongs to may have been submitted by another. Matching goes through the shared
tables, and the message row is locked while its state is decided."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from agent.models import MessageState, Receipt, ReceiptState
from agent.store.base import (
    MAX_RECEIPTS_PER_MESSAGE,
    MAX_UNMATCHED_RECEIPTS,
    MessageRow,
    ReceiptOutcome,
    ReceiptRow,
)
from agent.store.postgres.pool import PgPool, event, lock_smsc_ids, message_row, utc
from agent.store.segments import FINAL_RECEIPT_STATES, RECEIPT_TARGET, parts_detail, parts_state

_RECEIPT_TARGET = RECEIPT_TARGET


def _stamp(dt: datetime | None) -> str | None:
    return None if dt is None else utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # type: ignore[union-attr]


class ReceiptOps(PgPool):
    """Receipts as the gateways report them; a message's state follows its receipts."""

    async def find_by_smsc_id(self, gateway: str, smsc_id: str) -> MessageRow | None:
        rows = await self._read_messages(
            "SELECT m.* FROM message_smsc_ids s JOIN messages m ON m.id = s.message_id"
            " WHERE s.gateway = $1 AND s.smsc_id = $2 ORDER BY m.created_at DESC LIMIT 1",
            gateway, smsc_id,
        )
        return rows[0] if rows else None

    async def apply_receipt(
        self, receipt: Receipt, *, now: datetime | None = None
    ) -> ReceiptOutcome:
        """Store a receipt and move its message. Unknown ones are kept unmatched (and applied if
        the submit they belong to is recorded later); exact duplicates change nothing; a final
        state is never replaced by an intermediate one."""
        at = utc(now) or datetime.now(UTC)
        r = receipt
        dedupe = json.dumps(
            [r.gateway, r.smsc_id, r.message_id, r.state.value, r.error_code, _stamp(r.done_at)]
        )
        target = _RECEIPT_TARGET.get(r.state)
        async with self._tx(single=True) as conn:  # one statement (functions.py)
            row = await conn.fetchrow(
                "SELECT (s.m).*, s.receipt_id AS receipt_id_, s.outcome AS outcome_"
                " FROM aftercall_apply_receipt($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                " $11, $12) s",
                r.gateway, r.smsc_id, r.message_id, r.state.value,
                target.value if target is not None else None, r.error_code, utc(r.done_at),
                at, r.raw, dedupe, MAX_RECEIPTS_PER_MESSAGE, MAX_UNMATCHED_RECEIPTS)
        assert row is not None
        outcome, receipt_id = row["outcome_"], row["receipt_id_"]
        msg = message_row(row) if row["id"] is not None else None
        if outcome in ("full", "duplicate"):
            return ReceiptOutcome(None, msg, duplicate=True, changed=False)
        if outcome != "parts":
            return ReceiptOutcome(receipt_id, msg, duplicate=False, changed=outcome == "changed")
        # One part of a multi-part message: decided from every part's receipts.
        async with self._tx() as conn:
            if r.smsc_id:
                await lock_smsc_ids(conn, r.gateway, [r.smsc_id])
            row = None
            if r.message_id:
                row = await conn.fetchrow(
                    "SELECT * FROM messages WHERE id = $1 FOR UPDATE", r.message_id
                )
            if row is None and r.smsc_id:
                row = await conn.fetchrow(
                    "SELECT m.* FROM message_smsc_ids s JOIN messages m ON m.id = s.message_id"
                    " WHERE s.gateway = $1 AND s.smsc_id = $2 ORDER BY m.created_at DESC"
                    " LIMIT 1 FOR UPDATE OF m",
                    r.gateway, r.smsc_id,
                )
            msg = message_row(row) if row is not None else None
            if msg is not None and await conn.fetchval(
                    "SELECT COUNT(*) FROM receipts WHERE message_id = $1", msg.id
            ) >= MAX_RECEIPTS_PER_MESSAGE:
                return ReceiptOutcome(None, msg, duplicate=True, changed=False)
            receipt_id = await conn.fetchval(
                "INSERT INTO receipts (message_id, smsc_id, gateway, state, error_code, done_at,"
                " received_at, raw, dedupe_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
                " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                msg.id if msg else None, r.smsc_id, r.gateway, r.state.value, r.error_code,
                utc(r.done_at), at, r.raw, dedupe,
            )
            if receipt_id is None:
                return ReceiptOutcome(None, msg, duplicate=True, changed=False)
            if msg is None:
                if receipt_id % 64 == 0:
                    await conn.execute(
                        "DELETE FROM receipts WHERE message_id IS NULL AND gateway = $1 AND id <"
                        " (SELECT id FROM receipts WHERE message_id IS NULL AND gateway = $1"
                        "  ORDER BY id DESC LIMIT 1 OFFSET $2)",
                        r.gateway, MAX_UNMATCHED_RECEIPTS - 1)
                return ReceiptOutcome(receipt_id, None, duplicate=False, changed=False)
            changed, msg = await apply_to_message(
                conn, msg, r.state, r.smsc_id, r.error_code, r.gateway, at, receipt_id
            )
            return ReceiptOutcome(receipt_id, msg, duplicate=False, changed=changed)

    async def claim_nonce(self, nonce: str, *, now: datetime, ttl: float) -> bool:
        """Record a webhook's nonce for ``ttl`` seconds; False if it is already recorded (a
        replay). A few expired nonces are removed each time, so the table stays small."""
        at = utc(now) or datetime.now(UTC)
        async with self._tx() as conn:
            await conn.execute(
                "DELETE FROM webhook_nonces WHERE nonce IN (SELECT nonce FROM webhook_nonces"
                " WHERE expires_at <= $1 ORDER BY expires_at LIMIT 64)", at)
            got = await conn.fetchval(
                "INSERT INTO webhook_nonces (nonce, expires_at) VALUES ($1, $2)"
                " ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
                nonce, at + timedelta(seconds=ttl))
            return got is not None

    async def forget_nonce(self, nonce: str) -> None:
        async with self._tx() as conn:
            await conn.execute("DELETE FROM webhook_nonces WHERE nonce = $1", nonce)

    async def receipts(
        self, *, message_id: str | None = None, unmatched: bool = False
    ) -> list[ReceiptRow]:
        if unmatched:
            rows = await self._read("SELECT * FROM receipts WHERE message_id IS NULL ORDER BY id")
        elif message_id is not None:
            rows = await self._read(
                "SELECT * FROM receipts WHERE message_id = $1 ORDER BY id", message_id
            )
        else:
            rows = await self._read("SELECT * FROM receipts ORDER BY id")
        return [
            ReceiptRow(r["id"], r["message_id"], r["gateway"], r["smsc_id"], r["state"],
                       r["error_code"], r["done_at"], r["received_at"], r["raw"])
            for r in rows
        ]


async def apply_to_message(
    conn: asyncpg.Connection,
    msg: MessageRow,
    state: ReceiptState,
    smsc_id: str | None,
    error_code: str | None,
    gateway: str,
    at: datetime,
    receipt_id: int,
) -> tuple[bool, MessageRow]:
    target = _RECEIPT_TARGET.get(state)
    if target is None:  # intermediate (ACCEPTED/UNKNOWN): kept in receipts, the row stays put
        return False, msg
    current = msg.state
    parts_note: str | None = None
    if len(msg.smsc_ids) > 1 and smsc_id in msg.smsc_ids:
        # One receipt per part (agent.store.segments): decided once every part has its first.
        first: dict[str, ReceiptState] = {}
        errors: list[str] = []
        rows = await conn.fetch(
            "SELECT smsc_id, state, error_code FROM receipts WHERE message_id = $1"
            " AND state = ANY($2::text[]) ORDER BY id",
            msg.id, list(FINAL_RECEIPT_STATES),
        )
        for r in rows:
            if r["smsc_id"] not in first:
                first[r["smsc_id"]] = ReceiptState(r["state"])
                if r["error_code"] and r["state"] != ReceiptState.DELIVERED.value:
                    errors.append(r["error_code"])  # the lost part's error, not the last one's
        outcomes = [first.get(i) for i in msg.smsc_ids]
        whole = parts_state(outcomes)
        if whole is None or current not in (MessageState.SUBMITTED, MessageState.AMBIGUOUS):
            return False, msg
        target, parts_note = whole, parts_detail(gateway, outcomes)
        error_code = errors[0] if errors else error_code
    elif current in (MessageState.SUBMITTED, MessageState.AMBIGUOUS):
        pass
    elif current is MessageState.QUEUED and msg.submitting_since is not None:
        pass  # an HTTP callback carrying our id beat the gateway's response
    else:
        return False, msg
    detail = parts_note or f"{gateway} receipt {state.value} for {smsc_id or msg.id}"
    row = await conn.fetchrow(
        "UPDATE messages SET state = $1, reason = 'receipt', detail = $2,"
        " error_code = COALESCE($3, error_code), final_at = $4, updated_at = $4 WHERE id = $5"
        " RETURNING *",
        target.value, detail, error_code, at, msg.id,
    )
    assert row is not None
    await event(conn, msg.id, at, target.value, "receipt", detail)
    return True, message_row(row)
