"""Delivery receipts: storing them, matching them to messages, and moving those messages."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from agent.models import MessageState, Receipt, ReceiptState
from agent.store.base import (
    MAX_RECEIPTS_PER_MESSAGE,
    MAX_UNMATCHED_RECEIPTS,
    MessageRow,
    ReceiptOutcome,
    ReceiptRow,
)
from agent.store.packing import from_micros, id_key, id_sql, micros
from agent.store.segments import FINAL_RECEIPT_STATES, RECEIPT_TARGET, parts_detail, parts_state
from agent.store.sqlite.rows import (
    RECEIPT_STATE_CODES,
    RECEIPT_STATE_NAMES,
    _message,
    _now,
    event_now,
    receipt_detail,
    ts,
    us,
)
from agent.store.sqlite.writer import StoreWriter

_RECEIPT_TARGET = RECEIPT_TARGET


class ReceiptOps(StoreWriter):
    """Receipts as the gateways report them; a message's state follows its receipts. Each
    write is one op in the database thread (``_write_now``): one hop, however many
    statements."""

    async def find_by_smsc_id(self, gateway: str, smsc_id: str) -> MessageRow | None:
        rows = await self._read_messages(
            "SELECT m.* FROM message_smsc_ids s JOIN messages m ON m.ref = s.msg"
            " WHERE s.gateway = ? AND s.smsc_id = ? ORDER BY m.created_at DESC LIMIT 1",
            (gateway, smsc_id),
        )
        return rows[0] if rows else None

    async def apply_receipt(
        self, receipt: Receipt, *, now: datetime | None = None
    ) -> ReceiptOutcome:
        """Store a receipt and move its message. Unknown ones are kept unmatched (and applied if
        the submit they belong to is recorded later); exact duplicates change nothing; a final
        state is never replaced by an intermediate one."""
        when = now or _now()
        at = ts(when)
        r = receipt
        # A receipt's times are integer microseconds (schema 16); its state a code and its done
        # date how long before it was received (schema 22).
        done = None if r.done_at is None else micros(r.done_at)
        fields = (r.gateway, r.smsc_id, RECEIPT_STATE_CODES[r.state.value], r.error_code, done)
        received = micros(when)

        def op(conn: sqlite3.Connection) -> ReceiptOutcome:
            row = None
            if r.message_id:
                row = conn.execute("SELECT * FROM messages WHERE id = ?",
                                   (id_key(r.message_id),)).fetchone()
            if row is None and r.smsc_id:
                row = conn.execute(
                    "SELECT m.* FROM message_smsc_ids s JOIN messages m ON m.ref = s.msg"
                    " WHERE s.gateway = ? AND s.smsc_id = ? ORDER BY m.created_at DESC LIMIT 1",
                    (r.gateway, r.smsc_id),
                ).fetchone()
            msg = _message(row) if row is not None else None
            ref = row["ref"] if row is not None else None  # what receipts name it by (schema 14)
            if msg is not None:
                n = conn.execute("SELECT COUNT(*) FROM receipts WHERE msg = ?",
                                 (ref,)).fetchone()
                if n is not None and n[0] >= MAX_RECEIPTS_PER_MESSAGE:
                    return ReceiptOutcome(None, msg, duplicate=True, changed=False)
            # A repeat (the SMSC resends a receipt it saw no ack for) has the same fields as
            # one already stored for the same message, or among the unmatched.
            repeat = conn.execute(
                "SELECT 1 FROM receipts WHERE"
                + (" msg = ?" if msg else " msg IS NULL")
                + " AND gateway = ? AND smsc_id IS ? AND state = ? AND error_code IS ?"
                " AND received_at - done_off IS ? LIMIT 1",
                (*([ref] if msg else []), *fields)).fetchone()
            if repeat is not None:
                return ReceiptOutcome(None, msg, duplicate=True, changed=False)
            # The raw text says nothing the fields don't once the receipt has found its
            # message; an unmatched one keeps it, for whoever looks into why.
            ins = conn.execute(
                "INSERT INTO receipts (msg, smsc_id, gateway, state, error_code, done_off,"
                " received_at, raw) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                (ref, r.smsc_id, r.gateway, fields[2], r.error_code,
                 None if done is None else received - done, received,
                 None if msg else r.raw),
            ).fetchone()
            if msg is None:
                if ins["id"] % 64 == 0:
                    conn.execute(
                        "DELETE FROM receipts WHERE msg IS NULL AND gateway = ? AND id <"
                        " (SELECT id FROM receipts WHERE msg IS NULL AND gateway = ?"
                        "  ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (r.gateway, r.gateway, MAX_UNMATCHED_RECEIPTS - 1))
                return ReceiptOutcome(ins["id"], None, duplicate=False, changed=False)
            changed, msg = apply_to_message(
                conn, msg, r.state, r.smsc_id, r.error_code, r.gateway, at, ins["id"]
            )
            return ReceiptOutcome(ins["id"], msg, duplicate=False, changed=changed)

        return await self._write_now(op)

    async def claim_nonce(self, nonce: str, *, now: datetime, ttl: float) -> bool:
        """Record a webhook's nonce for ``ttl`` seconds; False if it is already recorded (a
        replay). A few expired nonces are removed each time, so the table stays small."""
        params = (nonce, ts(now + timedelta(seconds=ttl)))
        at = ts(now)

        def op(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM webhook_nonces WHERE nonce IN (SELECT nonce FROM webhook_nonces"
                " WHERE expires_at <= ? ORDER BY expires_at LIMIT 64)", (at,))
            cur = conn.execute(
                "INSERT INTO webhook_nonces (nonce, expires_at) VALUES (?, ?)"
                " ON CONFLICT(nonce) DO NOTHING", params)
            return cur.rowcount == 1

        return await self._write_now(op)

    async def forget_nonce(self, nonce: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM webhook_nonces WHERE nonce = ?", (nonce,))

        await self._write_now(op)

    async def receipts(
        self, *, message_id: str | None = None, unmatched: bool = False
    ) -> list[ReceiptRow]:
        # A receipt names its message by ref (schema 14); the id is read through it.
        sql = (f"SELECT r.*, {id_sql('m.id')} AS message_id FROM receipts r"
               " LEFT JOIN messages m ON m.ref = r.msg")
        if unmatched:
            rows = await self._read(sql + " WHERE r.msg IS NULL ORDER BY r.id")
        elif message_id is not None:
            rows = await self._read(
                sql + " WHERE r.msg = (SELECT ref FROM messages WHERE id = ?) ORDER BY r.id",
                (id_key(message_id),))
        else:
            rows = await self._read(sql + " ORDER BY r.id")
        return [
            ReceiptRow(
                r["id"],
                r["message_id"],
                r["gateway"],
                r["smsc_id"],
                RECEIPT_STATE_NAMES[r["state"]],
                r["error_code"],
                None if r["done_off"] is None
                else from_micros(r["received_at"] - r["done_off"]),
                from_micros(r["received_at"]),
                r["raw"] or "",
            )
            for r in rows
        ]


def apply_to_message(
    conn: sqlite3.Connection,
    msg: MessageRow,
    state: ReceiptState,
    smsc_id: str | None,
    error_code: str | None,
    gateway: str,
    at: str,
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
        rows = conn.execute(
            "SELECT smsc_id, state, error_code FROM receipts"
            " WHERE msg = (SELECT ref FROM messages WHERE id = ?) AND state IN"
            f" ({','.join('?' * len(FINAL_RECEIPT_STATES))}) ORDER BY id",
            (id_key(msg.id), *(RECEIPT_STATE_CODES[s] for s in FINAL_RECEIPT_STATES)),
        ).fetchall()
        for r in rows:
            if r["smsc_id"] not in first:
                part = ReceiptState(RECEIPT_STATE_NAMES[r["state"]])
                first[r["smsc_id"]] = part
                if r["error_code"] and part is not ReceiptState.DELIVERED:
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
    # Said by the row itself (its gateway, new state and only segment id): stored as ''
    # (schema 21), 37 bytes a message less; the history keeps the words.
    said = detail == receipt_detail(msg.gateway, target.value, msg.smsc_ids)
    row = conn.execute(
        "UPDATE messages SET state = ?, reason = 'receipt', detail = ?,"
        " error_code = COALESCE(?, error_code), final_at = ? WHERE id = ?"
        " RETURNING *",
        (
            target.value,
            "" if said else detail,
            error_code,
            us(at),
            id_key(msg.id),
        ),
    ).fetchone()
    assert row is not None
    event_now(conn, row, at, target.value, "receipt", detail)
    return True, _message(row)
