"""The store's two connections and its one writer task: grouped commits, savepoints, health."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite
import structlog

from agent.errors import StoreError
from agent.store.base import MessageRow
from agent.store.migrations import LATEST_VERSION, MIGRATIONS
from agent.store.sqlite.packing import MIGRATION_FUNCTIONS
from agent.store.sqlite.rows import _message, _now, _one, _rows, ts

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Run first on every connection; sqlite honours auto_vacuum only on a brand-new file, before
# journal_mode=WAL and the first table:
# INCREMENTAL lets retention hand freed pages back to the filesystem in small steps
# (``PRAGMA incremental_vacuum``) instead of a whole-file VACUUM that blocks every writer.
FIRST_OPEN: tuple[str, ...] = ("PRAGMA auto_vacuum = INCREMENTAL",)
WriteOp = Callable[[aiosqlite.Connection], Awaitable[T]]
#: An op that runs in the database thread itself: no thread hop per statement. A batch made
#: only of these (the hot path: a call's rows, the claim before a submit) is one hop in all.
ThreadOp = Callable[[sqlite3.Connection], T]


class _InThread:
    """Marks a queued op as a ``ThreadOp``."""

    __slots__ = ("fn",)

    def __init__(self, fn: ThreadOp[Any]) -> None:
        self.fn = fn

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


def private_files(path: Path) -> None:
    """Every number, text and reply is in the database: create it 0600 (SQLite gives its -wal
    and -shm the database's mode), and take away what others may do with an existing one
    (group access, if an operator gave it, stays theirs to decide)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return  # the connect that follows says what is wrong
    else:
        os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = p.stat()
            if st.st_mode & 0o007 and st.st_uid == os.geteuid():
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o007)
                log.warning("store_permissions_tightened", path=str(p),
                            mode=f"{stat.S_IMODE(st.st_mode) & ~0o007:04o}")
        except OSError:
            continue


_Item = tuple["WriteOp[Any] | _InThread", asyncio.Future[Any]]


def _ops_in_thread(db: sqlite3.Connection, fns: list[ThreadOp[Any]],
                   path: Path) -> list[tuple[bool, Any]]:
    """In the database thread, inside an open transaction: each op in its savepoint (one bad
    op fails alone); an environmental error (disk full, locked) dooms the batch and raises."""
    out: list[tuple[bool, Any]] = []
    for fn in fns:
        db.execute("SAVEPOINT op")
        try:
            result = fn(db)
        except sqlite3.Error as exc:
            if _environmental(exc):
                raise
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
            out.append((False, StoreError(f"{path}: write refused: {exc}")))
        except Exception as exc:  # noqa: BLE001 - a bug in one op fails that op
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
            out.append((False, exc))
        else:
            db.execute("RELEASE op")
            out.append((True, result))
    return out


class StoreWriter:
    """Owns the database's two connections. Once open, only the writer task uses the write
    connection ``_w``: everything else writes by handing an op to ``_write`` and reads through
    ``_read`` on the read-only ``_r``. The operation mixins use nothing but those two."""

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
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=max_batch * 16)
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
        if not self.path.parent.is_dir():
            # Said before aiosqlite starts its thread: a failed connect leaves that thread to
            # report to an event loop the command has already closed (a traceback on stderr).
            raise StoreError(f"{self.path}: cannot open database: no such directory "
                             f"{self.path.parent}")
        private_files(self.path)
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            for statement in FIRST_OPEN:  # before WAL: it only counts on a new, empty file
                await conn.execute(statement)
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
            for name, fn in MIGRATION_FUNCTIONS.items():
                await conn.create_function(name, 1, fn, deterministic=True)
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

    async def _write_now(self, op: ThreadOp[T]) -> T:
        """Like ``_write`` for an op that runs in the database thread (plain sqlite3)."""
        if self._closed or self._writer is None:
            raise StoreError(f"{self.path}: store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((_InThread(op), fut))
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

    async def _run_batch(self, batch: list[_Item]) -> None:
        conn = self._w
        assert conn is not None
        live = [(op, fut) for op, fut in batch if not fut.done()]
        if not live:
            return
        if all(isinstance(op, _InThread) for op, _ in live):
            await self._run_in_thread(conn, live)
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
        # The ops that run in the database thread go first, all in one hop (callers in one
        # batch are independent: each waits for its op before sending the next).
        in_thread = [(op, fut) for op, fut in live if isinstance(op, _InThread)]
        others = [(op, fut) for op, fut in live if not isinstance(op, _InThread)]
        try:
            if in_thread:
                fns = [op.fn for op, _ in in_thread]  # type: ignore[union-attr]
                done = await conn._execute(  # noqa: SLF001
                    _ops_in_thread, conn._conn, fns, self.path)  # noqa: SLF001
                outcomes += [(fut, ok, v)
                             for (_, fut), (ok, v) in zip(in_thread, done, strict=True)]
            for op, fut in others:
                if savepoints:
                    await conn.execute("SAVEPOINT op")
                try:
                    result = await op(conn)  # type: ignore[operator]
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
        self._committed(len(live))
        for fut, ok, value in outcomes:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    async def _run_in_thread(self, conn: aiosqlite.Connection, live: list[_Item]) -> None:
        """The whole transaction (BEGIN, each op in its savepoint, COMMIT) in one call into
        the database thread. aiosqlite's ``_execute`` is how it runs its own methods there."""
        fns = [op.fn for op, _ in live]  # type: ignore[union-attr]
        path = self.path

        def transaction(db: sqlite3.Connection) -> list[tuple[bool, Any]]:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = _ops_in_thread(db, fns, path)
                db.execute("COMMIT")
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return out

        try:
            outcomes = await conn._execute(transaction, conn._conn)  # noqa: SLF001
        except sqlite3.Error as exc:
            err = self._failure(exc, "commit")
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(err)
            return
        self._committed(len(live))
        for (_, fut), (ok, value) in zip(live, outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _committed(self, ops: int) -> None:
        if not self._healthy:
            log.info("store_write_recovered", path=str(self.path))
        self._healthy = True
        self.commits += 1
        self.ops_written += ops

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
