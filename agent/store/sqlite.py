"""SQLite Store on aiosqlite: WAL, versioned schema, one writer task that group-commits writes."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar, overload

import aiosqlite
import phonenumbers
import structlog

from agent.errors import StoreError
from agent.models import (
    CallRecord,
    Decision,
    InboundSms,
    MessageState,
    Receipt,
    ReceiptState,
    RecipientKind,
    Trigger,
)
from agent.store.base import (
    ImportResult,
    LinkRow,
    MessageEvent,
    MessageFilter,
    MessageRow,
    PolicyFacts,
    ReceiptOutcome,
    ReceiptRow,
)
from agent.store.migrations import LATEST_VERSION, MIGRATIONS

log = structlog.get_logger(__name__)

T = TypeVar("T")
WriteOp = Callable[[aiosqlite.Connection], Awaitable[T]]

# Errors that say "the database cannot take writes right now", not "this one op is wrong".
_ENVIRONMENTAL = {
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_CORRUPT",
    "SQLITE_NOMEM",
    "SQLITE_NOTADB",
    "SQLITE_IOERR",
}


def _environmental(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    return primary in _ENVIRONMENTAL


# "Sent" for cooldown and rate limits: anything that reached, or is on its way to, a gateway.
_SENT = "(submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"

_RECEIPT_TARGET = {
    ReceiptState.DELIVERED: MessageState.DELIVERED,
    ReceiptState.EXPIRED: MessageState.EXPIRED,
    ReceiptState.UNDELIVERED: MessageState.UNDELIVERED,
    ReceiptState.REJECTED: MessageState.FAILED,
}
# For multi-segment messages a later segment's failure outranks an earlier segment's success:
# the handset did not get the whole text.
_RANK = {
    MessageState.DELIVERED: 1,
    MessageState.EXPIRED: 2,
    MessageState.UNDELIVERED: 3,
    MessageState.FAILED: 4,
}

_TRANSITION_FIELDS = frozenset(
    {
        "attempts",
        "error_code",
        "queued_at",
        "submitted_at",
        "final_at",
        "next_attempt_at",
        "submitting_since",
        "expires_at",
        "hangup_to_submit_ms",
        "gateway",
    }
)


@overload
def ts(dt: datetime) -> str: ...
@overload
def ts(dt: None) -> None: ...
@overload
def ts(dt: datetime | None) -> str | None: ...
def ts(dt: datetime | None) -> str | None:
    """The one stored time form: fixed-width UTC, so text order is time order. Naive = UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@overload
def _dt(value: str) -> datetime: ...
@overload
def _dt(value: str | None) -> datetime | None: ...
def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _now() -> datetime:
    return datetime.now(UTC)


def _message(r: sqlite3.Row) -> MessageRow:
    return MessageRow(
        id=r["id"],
        idempotency_key=r["idempotency_key"],
        call_id=r["call_id"],
        rule=r["rule"],
        trigger=Trigger(r["trigger"]),
        recipient_kind=RecipientKind(r["recipient_kind"]),
        number=r["number"],
        template=r["template"],
        gateway=r["gateway"],
        sender_id=r["sender_id"],
        text=r["text"],
        encoding=r["encoding"],
        segments=r["segments"],
        category=r["category"],
        dlt_template_id=r["dlt_template_id"],
        dlt_entity_id=r["dlt_entity_id"],
        state=MessageState(r["state"]),
        reason=r["reason"],
        detail=r["detail"],
        attempts=r["attempts"],
        smsc_ids=tuple(json.loads(r["smsc_ids"])),
        error_code=r["error_code"],
        created_at=_dt(r["created_at"]),
        queued_at=_dt(r["queued_at"]),
        submitted_at=_dt(r["submitted_at"]),
        final_at=_dt(r["final_at"]),
        next_attempt_at=_dt(r["next_attempt_at"]),
        submitting_since=_dt(r["submitting_since"]),
        expires_at=_dt(r["expires_at"]),
        call_ended_at=_dt(r["call_ended_at"]),
        hangup_to_submit_ms=r["hangup_to_submit_ms"],
        updated_at=_dt(r["updated_at"]),
    )


async def _rows(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _one(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    rows = await _rows(conn, sql, params)
    return rows[0] if rows else None


async def _event(
    conn: aiosqlite.Connection,
    message_id: str,
    at: str,
    state: str,
    reason: str | None,
    detail: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO message_events (message_id, at, state, reason, detail) VALUES (?,?,?,?,?)",
        (message_id, at, state, reason, detail),
    )


class SqliteStore:
    """The embedded store. Open with ``await SqliteStore(path).open()`` or ``async with``.

    Every write is an op queued to one writer task; the writer runs whatever ops are waiting as
    one transaction (each in its own savepoint, so one bad op fails alone) and commits once. Under
    load that is one fsync for many callers; when idle it adds no delay. ``batch_delay`` > 0
    trades latency for bigger groups. Reads use a second, read-only connection (WAL lets it read
    while the writer writes)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        max_batch: int = 256,
        batch_delay: float = 0.0,
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._batch_delay = batch_delay
        # FULL: a commit that returned survives power loss. The outbox row and the "attempt
        # started" mark must, or a restart could resend; grouping keeps the fsyncs affordable.
        self._synchronous = synchronous
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[tuple[WriteOp[Any], asyncio.Future[Any]] | None] = asyncio.Queue(
            maxsize=max_batch * 16
        )
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._healthy = True
        self._last_error: str | None = None
        self.commits = 0
        self.ops_written = 0

    # ---- lifecycle ------------------------------------------------------------------------

    async def open(self) -> Self:
        try:
            self._w = await self._connect()
            await self._w.execute(f"PRAGMA synchronous = {self._synchronous}")
            await self._migrate(self._w)
            self._r = await self._connect()
            await self._r.execute("PRAGMA query_only = 1")
        except BaseException:
            await self._close_connections()
            raise
        self._writer = asyncio.create_task(
            self._write_loop(), name=f"store-writer:{self.path.name}"
        )
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = await _one(conn, "PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        if mode is not None and str(mode[0]).lower() != "wal":
            log.warning("store_wal_unavailable", path=str(self.path), journal_mode=mode[0])
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async def version() -> int:
            row = await _one(conn, "PRAGMA user_version")
            return int(row[0]) if row else 0

        def refuse(found: int) -> StoreError:
            return StoreError(
                f"{self.path}: database schema version {found} is newer than this aftercall "
                f"supports (version {LATEST_VERSION}); upgrade aftercall or use another database"
            )

        try:
            found = await version()
            if found > LATEST_VERSION:
                raise refuse(found)
            if found == LATEST_VERSION:
                return
            await conn.execute("BEGIN IMMEDIATE")
            try:
                found = await version()  # another agent may have migrated while we waited
                if found > LATEST_VERSION:
                    raise refuse(found)
                for number in range(found + 1, LATEST_VERSION + 1):
                    for statement in MIGRATIONS[number - 1]:
                        await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: schema migration failed: {exc}") from exc
        log.info(
            "store_migrated", path=str(self.path), from_version=found, to_version=LATEST_VERSION
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._r, self._w):
            if conn is not None:
                await conn.close()
        self._r = self._w = None

    # ---- health ---------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def health(self) -> bool:
        """Can the store write? Performs a tiny real write through the writer."""

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO heartbeat (id, at) VALUES (1, ?)"
                " ON CONFLICT(id) DO UPDATE SET at = excluded.at",
                (ts(_now()),),
            )

        try:
            await self._write(op)
        except StoreError:
            return False
        return True

    # ---- the writer -----------------------------------------------------------------------

    async def _write(self, op: WriteOp[T]) -> T:
        if self._closed or self._writer is None:
            raise StoreError(f"{self.path}: store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((op, fut))
        return await fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            deadline = loop.time() + self._batch_delay
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._run_batch(batch)
        # Anything queued behind the close sentinel is refused, not lost silently.
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item[1].done():
                item[1].set_exception(StoreError(f"{self.path}: store is closed"))

    def _failure(self, exc: sqlite3.Error, what: str) -> StoreError:
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        self._healthy = False
        self._last_error = f"{what}: {name}: {exc}"
        log.error("store_write_failed", path=str(self.path), error=self._last_error)
        return StoreError(f"{self.path}: cannot write ({name}: {exc})")

    @staticmethod
    async def _undo(conn: aiosqlite.Connection, savepoints: bool) -> None:
        if savepoints:
            await conn.execute("ROLLBACK TO op")
            await conn.execute("RELEASE op")
        else:  # roll back the lone op, then COMMIT below ends an empty transaction
            await conn.execute("ROLLBACK")
            await conn.execute("BEGIN IMMEDIATE")

    async def _run_batch(self, batch: list[tuple[WriteOp[Any], asyncio.Future[Any]]]) -> None:
        conn = self._w
        assert conn is not None
        live = [(op, fut) for op, fut in batch if not fut.done()]
        if not live:
            return
        try:
            await conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            err = self._failure(exc, "begin")
            for _, fut in live:
                fut.set_exception(err)
            return
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        # A lone op (the idle, latency-bound case) needs no savepoint: the transaction is its own.
        savepoints = len(live) > 1
        try:
            for op, fut in live:
                if savepoints:
                    await conn.execute("SAVEPOINT op")
                try:
                    result = await op(conn)
                except sqlite3.Error as exc:
                    if _environmental(exc):
                        raise  # the whole transaction is doomed: fail the batch below
                    await self._undo(conn, savepoints)
                    outcomes.append((fut, False, StoreError(f"{self.path}: write refused: {exc}")))
                except Exception as exc:  # noqa: BLE001 - a bug in one op must not fail the batch
                    await self._undo(conn, savepoints)
                    outcomes.append((fut, False, exc))
                else:
                    if savepoints:
                        await conn.execute("RELEASE op")
                    outcomes.append((fut, True, result))
            await conn.execute("COMMIT")
        except sqlite3.Error as exc:
            err = self._failure(exc, "commit")
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # sqlite already rolled back (it does on SQLITE_FULL and some IOERRs)
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(err)
            return
        if not self._healthy:
            log.info("store_write_recovered", path=str(self.path))
        self._healthy = True
        self.commits += 1
        self.ops_written += len(live)
        for fut, ok, value in outcomes:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    # ---- reads ----------------------------------------------------------------------------

    async def _read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[sqlite3.Row]:
        if self._r is None:
            raise StoreError(f"{self.path}: store is not open")
        try:
            return await _rows(self._r, sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: read failed: {exc}") from exc

    async def _read_messages(self, sql: str, params: Sequence[Any] = ()) -> list[MessageRow]:
        return [_message(r) for r in await self._read(sql, params)]

    # ---- calls ----------------------------------------------------------------------------

    async def save_call(self, record: CallRecord, *, now: datetime | None = None) -> None:
        params = (
            record.call_id,
            json.dumps(record.to_dict(), separators=(",", ":")),
            record.trigger.value,
            record.disposition.value,
            record.queue,
            record.caller,
            ts(record.ended_at),
            ts(now or _now()),
        )

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO calls (call_id, record, trigger, disposition, queue, caller, ended_at,"
                " created_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(call_id) DO UPDATE SET"
                " record=excluded.record, trigger=excluded.trigger,"
                " disposition=excluded.disposition, queue=excluded.queue,"
                " caller=excluded.caller, ended_at=excluded.ended_at",
                params,
            )

        await self._write(op)

    async def get_call(self, call_id: str) -> CallRecord | None:
        rows = await self._read("SELECT record FROM calls WHERE call_id = ?", (call_id,))
        return CallRecord.from_dict(json.loads(rows[0]["record"])) if rows else None

    async def newest_call_end(self) -> datetime | None:
        """When the newest call this store knows ended; None for a store that never ran."""
        rows = await self._read("SELECT max(ended_at) AS t FROM calls", ())
        return _dt(rows[0]["t"]) if rows and rows[0]["t"] else None

    # ---- messages -------------------------------------------------------------------------

    async def insert_message(
        self,
        decision: Decision,
        *,
        state: MessageState,
        now: datetime,
        reason: str | None = None,
        detail: str | None = None,
        next_attempt_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[MessageRow, bool]:
        at = ts(now)
        d = decision
        params = (
            uuid.uuid4().hex,
            d.idempotency_key,
            d.call_id,
            d.rule,
            d.trigger.value,
            d.recipient.value,
            d.number,
            d.template,
            d.gateway,
            d.sender_id,
            d.text,
            d.encoding,
            d.segments,
            d.category,
            d.dlt_template_id,
            d.dlt_entity_id,
            state.value,
            reason,
            detail,
            at,
            at if state is MessageState.QUEUED else None,
            at if state.final else None,
            ts(next_attempt_at),
            ts(expires_at),
            ts(d.call_ended_at),
            at,
        )

        async def op(conn: aiosqlite.Connection) -> tuple[MessageRow, bool]:
            row = await _one(
                conn,
                "INSERT INTO messages (id, idempotency_key, call_id, rule, trigger, recipient_kind,"
                " number, template, gateway, sender_id, text, encoding, segments, category,"
                " dlt_template_id, dlt_entity_id, state, reason, detail, created_at, queued_at,"
                " final_at, next_attempt_at, expires_at, call_ended_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(idempotency_key) DO NOTHING RETURNING *",
                params,
            )
            if row is None:
                existing = await _one(
                    conn, "SELECT * FROM messages WHERE idempotency_key = ?", (d.idempotency_key,)
                )
                assert existing is not None
                return _message(existing), False
            await _event(conn, row["id"], at, state.value, reason, detail)
            return _message(row), True

        return await self._write(op)

    async def get_message(self, message_id: str) -> MessageRow | None:
        rows = await self._read_messages("SELECT * FROM messages WHERE id = ?", (message_id,))
        return rows[0] if rows else None

    async def transition(
        self,
        message_id: str,
        state: MessageState,
        *,
        now: datetime,
        reason: str | None = None,
        detail: str | None = None,
        from_states: Collection[MessageState] | None = None,
        **fields: Any,
    ) -> MessageRow | None:
        """Move a row to ``state`` (recording the event), optionally only from ``from_states``.
        Returns the new row, or None when the row is missing or not in an allowed state."""
        unknown = set(fields) - _TRANSITION_FIELDS
        if unknown:
            raise ValueError(f"transition: unknown message fields {sorted(unknown)}")
        at = ts(now)
        sets = ["state = ?", "reason = ?", "detail = ?", "updated_at = ?"]
        params: list[Any] = [state.value, reason, detail, at]
        for name, value in fields.items():
            sets.append(f"{name} = ?")
            params.append(ts(value) if isinstance(value, datetime) else value)
        if state.final and "final_at" not in fields:
            sets.append("final_at = ?")
            params.append(at)
        if state is MessageState.QUEUED and "queued_at" not in fields:
            sets.append("queued_at = COALESCE(queued_at, ?)")
            params.append(at)
        where = "id = ?"
        params.append(message_id)
        if from_states is not None:
            allowed = [s.value for s in from_states]
            where += f" AND state IN ({','.join('?' * len(allowed))})"
            params.extend(allowed)
        sql = f"UPDATE messages SET {', '.join(sets)} WHERE {where} RETURNING *"

        async def op(conn: aiosqlite.Connection) -> MessageRow | None:
            row = await _one(conn, sql, params)
            if row is None:
                return None
            await _event(conn, message_id, at, state.value, reason, detail)
            return _message(row)

        return await self._write(op)

    async def claim_for_submit(self, message_id: str, *, now: datetime) -> MessageRow | None:
        """Mark an attempt as started (attempts+1, submitting_since) before the gateway is called.
        Returns None unless the row is queued, unclaimed and due: someone else has it, or a
        stale read is trying to jump its backoff."""
        at = ts(now)

        async def op(conn: aiosqlite.Connection) -> MessageRow | None:
            row = await _one(
                conn,
                "UPDATE messages SET attempts = attempts + 1, submitting_since = ?, updated_at = ?"
                " WHERE id = ? AND state = 'queued' AND submitting_since IS NULL"
                " AND (next_attempt_at IS NULL OR next_attempt_at <= ?) RETURNING *",
                (at, at, message_id, at),
            )
            if row is None:
                return None
            await _event(
                conn,
                message_id,
                at,
                "queued",
                "submitting",
                f"attempt {row['attempts']} via {row['gateway']}",
            )
            return _message(row)

        return await self._write(op)

    async def record_submit(
        self,
        message_id: str,
        *,
        gateway: str,
        smsc_ids: Sequence[str],
        now: datetime,
        hangup_to_submit_ms: float | None,
    ) -> MessageRow | None:
        """The gateway accepted the message: store its ids and move queued/ambiguous -> submitted.
        A receipt that raced ahead of this (stored unmatched) is applied now."""
        at = ts(now)
        ids = list(dict.fromkeys(smsc_ids))

        async def op(conn: aiosqlite.Connection) -> MessageRow | None:
            row = await _one(
                conn,
                "UPDATE messages SET state = CASE WHEN state IN ('queued', 'ambiguous')"
                " THEN 'submitted' ELSE state END, reason = NULL, detail = NULL,"
                " gateway = ?, smsc_ids = ?, submitted_at = ?, submitting_since = NULL,"
                " next_attempt_at = NULL, error_code = NULL, hangup_to_submit_ms = ?,"
                " updated_at = ? WHERE id = ? RETURNING *",
                (gateway, json.dumps(ids), at, hangup_to_submit_ms, at, message_id),
            )
            if row is None:
                return None
            await _event(
                conn,
                message_id,
                at,
                "submitted",
                None,
                f"{gateway} accepted, smsc ids {','.join(ids)}",
            )
            await conn.executemany(
                "INSERT OR IGNORE INTO message_smsc_ids (gateway, smsc_id, message_id)"
                " VALUES (?,?,?)",
                [(gateway, i, message_id) for i in ids],
            )
            msg = _message(row)
            if ids:
                pending = await _rows(
                    conn,
                    f"SELECT * FROM receipts WHERE message_id IS NULL AND gateway = ? AND smsc_id"
                    f" IN ({','.join('?' * len(ids))}) ORDER BY id",
                    [gateway, *ids],
                )
                for r in pending:
                    await conn.execute(
                        "UPDATE receipts SET message_id = ? WHERE id = ?", (message_id, r["id"])
                    )
                    _, msg = await _apply_to_message(
                        conn,
                        msg,
                        ReceiptState(r["state"]),
                        r["smsc_id"],
                        r["error_code"],
                        gateway,
                        at,
                        r["id"],
                    )
            return msg

        return await self._write(op)

    async def recover_in_flight(self, *, now: datetime) -> list[MessageRow]:
        """At startup: rows whose attempt started but never finished become ambiguous (the SMSC
        may have the message) rather than being sent again."""
        at = ts(now)

        async def op(conn: aiosqlite.Connection) -> list[MessageRow]:
            rows = await _rows(
                conn,
                "UPDATE messages SET state = 'ambiguous', reason = 'interrupted',"
                " detail = 'agent stopped during submit started at ' || submitting_since,"
                " submitting_since = NULL, next_attempt_at = NULL, updated_at = ?"
                " WHERE submitting_since IS NOT NULL AND state = 'queued' RETURNING *",
                (at,),
            )
            for r in rows:
                await _event(conn, r["id"], at, "ambiguous", "interrupted", r["detail"])
            return [_message(r) for r in rows]

        return await self._write(op)

    async def due_messages(self, now: datetime, limit: int) -> list[MessageRow]:
        return await self._read_messages(
            "SELECT * FROM messages WHERE state IN ('queued', 'deferred')"
            " AND next_attempt_at <= ? AND submitting_since IS NULL"
            " ORDER BY next_attempt_at LIMIT ?",
            (ts(now), limit),
        )

    async def next_due_at(self) -> datetime | None:
        rows = await self._read(
            "SELECT MIN(next_attempt_at) FROM messages WHERE state IN ('queued', 'deferred')"
            " AND submitting_since IS NULL"
        )
        return _dt(rows[0][0]) if rows else None

    async def messages_in_state(
        self, state: MessageState, *, limit: int | None = None
    ) -> list[MessageRow]:
        return await self._read_messages(
            "SELECT * FROM messages WHERE state = ? ORDER BY created_at LIMIT ?",
            (state.value, -1 if limit is None else limit),
        )

    async def message_events(self, message_id: str) -> list[MessageEvent]:
        rows = await self._read(
            "SELECT * FROM message_events WHERE message_id = ? ORDER BY id", (message_id,)
        )
        return [
            MessageEvent(
                r["message_id"],
                _dt(r["at"]),
                MessageState(r["state"]),
                r["reason"],
                r["detail"],
            )
            for r in rows
        ]

    async def list_messages(self, filters: MessageFilter | None = None) -> list[MessageRow]:
        f = filters or MessageFilter()
        where: list[str] = []
        params: list[Any] = []
        if f.states:
            where.append(f"state IN ({','.join('?' * len(f.states))})")
            params.extend(s.value for s in f.states)
        for column, value in (
            ("rule", f.rule),
            ("call_id", f.call_id),
            ("number", f.number),
            ("gateway", f.gateway),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.since is not None:
            where.append("created_at >= ?")
            params.append(ts(f.since))
        if f.until is not None:
            where.append("created_at < ?")
            params.append(ts(f.until))
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at {'DESC' if f.newest_first else 'ASC'}, id LIMIT ? OFFSET ?"
        params += [-1 if f.limit is None else f.limit, f.offset]
        return await self._read_messages(sql, params)

    async def latest_message_to(self, number: str) -> MessageRow | None:
        rows = await self._read_messages(
            "SELECT * FROM messages WHERE number = ? AND submitted_at IS NOT NULL"
            " ORDER BY submitted_at DESC LIMIT 1",
            (number,),
        )
        return rows[0] if rows else None

    # ---- receipts -------------------------------------------------------------------------

    async def find_by_smsc_id(self, gateway: str, smsc_id: str) -> MessageRow | None:
        rows = await self._read_messages(
            "SELECT m.* FROM message_smsc_ids s JOIN messages m ON m.id = s.message_id"
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
        at = ts(now or _now())
        r = receipt
        dedupe = json.dumps(
            [r.gateway, r.smsc_id, r.message_id, r.state.value, r.error_code, ts(r.done_at)]
        )

        async def op(conn: aiosqlite.Connection) -> ReceiptOutcome:
            row = None
            if r.message_id:
                row = await _one(conn, "SELECT * FROM messages WHERE id = ?", (r.message_id,))
            if row is None and r.smsc_id:
                row = await _one(
                    conn,
                    "SELECT m.* FROM message_smsc_ids s JOIN messages m ON m.id = s.message_id"
                    " WHERE s.gateway = ? AND s.smsc_id = ? ORDER BY m.created_at DESC LIMIT 1",
                    (r.gateway, r.smsc_id),
                )
            msg = _message(row) if row is not None else None
            ins = await _one(
                conn,
                "INSERT INTO receipts (message_id, smsc_id, gateway, state, error_code, done_at,"
                " received_at, raw, dedupe_key) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(dedupe_key) DO NOTHING RETURNING id",
                (
                    msg.id if msg else None,
                    r.smsc_id,
                    r.gateway,
                    r.state.value,
                    r.error_code,
                    ts(r.done_at),
                    at,
                    r.raw,
                    dedupe,
                ),
            )
            if ins is None:
                return ReceiptOutcome(None, msg, duplicate=True, changed=False)
            if msg is None:
                return ReceiptOutcome(ins["id"], None, duplicate=False, changed=False)
            changed, msg = await _apply_to_message(
                conn, msg, r.state, r.smsc_id, r.error_code, r.gateway, at, ins["id"]
            )
            return ReceiptOutcome(ins["id"], msg, duplicate=False, changed=changed)

        return await self._write(op)

    async def receipts(
        self, *, message_id: str | None = None, unmatched: bool = False
    ) -> list[ReceiptRow]:
        if unmatched:
            rows = await self._read("SELECT * FROM receipts WHERE message_id IS NULL ORDER BY id")
        elif message_id is not None:
            rows = await self._read(
                "SELECT * FROM receipts WHERE message_id = ? ORDER BY id", (message_id,)
            )
        else:
            rows = await self._read("SELECT * FROM receipts ORDER BY id")
        return [
            ReceiptRow(
                r["id"],
                r["message_id"],
                r["gateway"],
                r["smsc_id"],
                r["state"],
                r["error_code"],
                _dt(r["done_at"]),
                _dt(r["received_at"]),
                r["raw"],
            )
            for r in rows
        ]

    # ---- policy facts ---------------------------------------------------------------------

    async def last_sent_at(self, number: str, rule: str) -> datetime | None:
        rows = await self._read(
            f"SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
            f" WHERE number = ? AND rule = ? AND {_SENT}",
            (number, rule),
        )
        last: str | None = rows[0][0]
        return _dt(last)

    async def count_sent_since(self, number: str | None, since: datetime) -> int:
        # created_at <= submitted_at, so this equals COALESCE(submitted_at, created_at) >= since
        # while letting both indexes serve it.
        sql = (
            f"SELECT COUNT(*) FROM messages WHERE {_SENT}"
            " AND (created_at >= ? OR submitted_at >= ?)"
        )
        params: list[Any] = [ts(since), ts(since)]
        if number is not None:
            sql += " AND number = ?"
            params.append(number)
        rows = await self._read(sql, params)
        return int(rows[0][0])

    async def policy_facts(
        self, number: str, rule: str, *, number_since: datetime, global_since: datetime
    ) -> PolicyFacts:
        rows = await self._read(
            "SELECT EXISTS(SELECT 1 FROM opt_outs WHERE number = :n),"
            " EXISTS(SELECT 1 FROM dnd WHERE number = :n),"
            " (SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
            f"   WHERE number = :n AND rule = :r AND {_SENT}),"
            f" (SELECT COUNT(*) FROM messages WHERE number = :n AND {_SENT}"
            "   AND (created_at >= :ns OR submitted_at >= :ns)),"
            f" (SELECT COUNT(*) FROM messages WHERE {_SENT}"
            "   AND (created_at >= :gs OR submitted_at >= :gs))",
            {"n": number, "r": rule, "ns": ts(number_since), "gs": ts(global_since)},
        )
        r = rows[0]
        return PolicyFacts(bool(r[0]), bool(r[1]), _dt(r[2]), int(r[3]), int(r[4]))

    async def is_opted_out(self, number: str) -> bool:
        return bool(await self._read("SELECT 1 FROM opt_outs WHERE number = ?", (number,)))

    async def opt_out(self, number: str, *, source: str, now: datetime | None = None) -> None:
        params = (number, ts(now or _now()), source)

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO opt_outs (number, at, source) VALUES (?,?,?) ON CONFLICT(number)"
                " DO UPDATE SET at = excluded.at, source = excluded.source",
                params,
            )

        await self._write(op)

    async def opt_in(self, number: str) -> bool:
        async def op(conn: aiosqlite.Connection) -> bool:
            return bool(
                await _rows(
                    conn, "DELETE FROM opt_outs WHERE number = ? RETURNING number", (number,)
                )
            )

        return await self._write(op)

    async def is_dnd(self, number: str) -> bool:
        return bool(await self._read("SELECT 1 FROM dnd WHERE number = ?", (number,)))

    async def add_dnd(
        self, numbers: Iterable[str], *, source: str, now: datetime | None = None
    ) -> int:
        at = ts(now or _now())
        rows = [(n, at, source) for n in dict.fromkeys(numbers)]

        async def op(conn: aiosqlite.Connection) -> int:
            await conn.executemany(
                "INSERT INTO dnd (number, at, source) VALUES (?,?,?) ON CONFLICT(number)"
                " DO UPDATE SET at = excluded.at, source = excluded.source",
                rows,
            )
            return len(rows)

        return await self._write(op)

    async def remove_dnd(self, number: str) -> bool:
        async def op(conn: aiosqlite.Connection) -> bool:
            return bool(
                await _rows(conn, "DELETE FROM dnd WHERE number = ? RETURNING number", (number,))
            )

        return await self._write(op)

    async def import_dnd_csv(
        self, path: str | Path, *, region: str | None = None, source: str | None = None
    ) -> ImportResult:
        """Import a DND list: one number per row in the first column; a header row, blank rows
        and ``#`` comments are skipped. National numbers need ``region`` (e.g. "IN")."""
        numbers, problems = await asyncio.to_thread(read_number_csv, Path(path), region)
        imported = await self.add_dnd(numbers, source=source or f"csv:{Path(path).name}")
        return ImportResult(imported, tuple(problems))

    # ---- replies, links -------------------------------------------------------------------

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
            message_id,
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

        async def op(conn: aiosqlite.Connection) -> int:
            row = await _one(
                conn,
                "INSERT INTO replies (message_id, gateway, number, recipient, text, keyword,"
                " action, sentiment, rating, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " RETURNING id",
                params,
            )
            assert row is not None
            return int(row["id"])

        return await self._write(op)

    async def add_link(
        self, code: str, url: str, *, message_id: str | None, now: datetime | None = None
    ) -> None:
        params = (code, message_id, url, ts(now or _now()))

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO links (code, message_id, url, created_at) VALUES (?,?,?,?)", params
            )

        await self._write(op)

    async def link_to_message(self, codes: list[str], message_id: str) -> None:
        """Count links created before their message row existed against that message."""
        if not codes:
            return

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "UPDATE links SET message_id = ? WHERE code = ? AND message_id IS NULL",
                [(message_id, c) for c in codes],
            )

        await self._write(op)

    async def resolve_link(self, code: str) -> LinkRow | None:
        rows = await self._read("SELECT * FROM links WHERE code = ?", (code,))
        if not rows:
            return None
        r = rows[0]
        return LinkRow(r["code"], r["message_id"], r["url"], _dt(r["created_at"]))

    async def add_click(
        self, code: str, *, at: datetime | None = None, user_agent: str | None = None
    ) -> None:
        params = (code, ts(at or _now()), user_agent)

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute("INSERT INTO clicks (code, at, user_agent) VALUES (?,?,?)", params)

        await self._write(op)


async def _apply_to_message(
    conn: aiosqlite.Connection,
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
    if current in (MessageState.SUBMITTED, MessageState.AMBIGUOUS):
        pass
    elif current is MessageState.QUEUED and msg.submitting_since is not None:
        pass  # an HTTP callback carrying our id beat the gateway's response
    elif (
        current in _RANK
        and len(msg.smsc_ids) > 1
        and _RANK[target] > _RANK[current]
        and smsc_id is not None
        and msg.submitted_at is not None
        and not await _one(
            conn,
            "SELECT 1 FROM receipts WHERE message_id = ? AND smsc_id = ? AND id <> ?"
            " AND state IN ('delivered', 'expired', 'undelivered', 'rejected')",
            (msg.id, smsc_id, receipt_id),
        )
    ):
        pass  # another segment failed after one was delivered
    else:
        return False, msg
    row = await _one(
        conn,
        "UPDATE messages SET state = ?, reason = 'receipt', detail = ?,"
        " error_code = COALESCE(?, error_code), final_at = ?, updated_at = ? WHERE id = ?"
        " RETURNING *",
        (
            target.value,
            f"{gateway} receipt {state.value} for {smsc_id or msg.id}",
            error_code,
            at,
            at,
            msg.id,
        ),
    )
    assert row is not None
    await _event(conn, msg.id, at, target.value, "receipt", row["detail"])
    return True, _message(row)


def read_number_csv(path: Path, region: str | None) -> tuple[list[str], list[str]]:
    """Parse a one-number-per-row CSV into E.164 numbers plus ``file:line: problem`` strings."""
    numbers: list[str] = []
    problems: list[str] = []
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
    with fh:
        reader = csv.reader(fh)
        for cells in reader:
            line = reader.line_num
            raw = cells[0].strip() if cells else ""
            if not raw or raw.startswith("#"):
                continue
            if not any(ch.isdigit() for ch in raw):
                if not numbers and not problems:
                    continue  # a header row
                problems.append(f"{path}:{line}: not a phone number")
                continue
            try:
                parsed = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                problems.append(
                    f"{path}:{line}: not a phone number"
                    + ("" if region else " (national numbers need a region)")
                )
                continue
            if not phonenumbers.is_possible_number(parsed):
                problems.append(f"{path}:{line}: not a possible phone number")
                continue
            numbers.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return numbers, problems
