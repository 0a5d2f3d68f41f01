"""The store's two connections and its writer thread: grouped commits, savepoints, health.

Writes go to one thread that owns the write connection (plain sqlite3): an op is a function
of that connection, queued with a future; the thread runs whatever ops are waiting as one
transaction (each op in its savepoint when it has company, so one bad op fails alone; an op
alone has the transaction for its savepoint), commits once, and answers
all their callers with one ``loop.call_soon_threadsafe``. An op costs one hop into the thread
and one back, whatever it does. Reads use a second, read-only connection (aiosqlite; WAL
lets it read while the thread writes).
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite
import structlog

from agent.errors import StoreError
from agent.store.base import MessageRow
from agent.store.frozen import MIGRATION_FUNCTIONS
from agent.store.migrations import LATEST_VERSION, MIGRATIONS
from agent.store.sqlite.rows import _message, _now, _rows, ts

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Run first on every connection; sqlite honours auto_vacuum only on a brand-new file, before
# journal_mode=WAL and the first table:
# INCREMENTAL lets retention hand freed pages back to the filesystem in small steps
# (``PRAGMA incremental_vacuum``) instead of a whole-file VACUUM that blocks every writer.
FIRST_OPEN: tuple[str, ...] = ("PRAGMA auto_vacuum = INCREMENTAL",)
#: A write: runs in the writer thread, inside the batch's transaction, on the write connection.
WriteOp = Callable[[sqlite3.Connection], T]

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


#: An op, its caller's future, and what to run on the loop the moment it is committed.
_Item = tuple[WriteOp[Any], asyncio.Future[Any], Callable[[Any], None] | None]
#: A batch's answer from the thread: each op's (ok, value), or the error that failed it whole.
_Outcome = list[tuple[bool, Any]] | tuple[str, sqlite3.Error]


def _run(db: sqlite3.Connection, fn: WriteOp[Any], path: Path,
         undo: str) -> tuple[bool, Any]:
    """One op as (ok, value); when it fails, ``undo`` takes back what it wrote. An
    environmental error (disk full, locked) dooms the batch and raises."""
    try:
        return True, fn(db)
    except sqlite3.Error as exc:
        if _environmental(exc):
            raise
        failed: Exception = StoreError(f"{path}: write refused: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug in one op fails that op
        failed = exc
    db.execute(undo)
    return False, failed


def _ops(db: sqlite3.Connection, fns: list[WriteOp[Any]], path: Path) -> list[tuple[bool, Any]]:
    """Inside an open transaction: each op in its savepoint (one bad op fails alone). A batch
    of one op (a record on a quiet line, the usual case) has the transaction for its
    savepoint, two statements fewer on the way to the commit: a failure rolls it back."""
    if len(fns) == 1:
        return [_run(db, fns[0], path, "ROLLBACK")]
    out: list[tuple[bool, Any]] = []
    for fn in fns:
        db.execute("SAVEPOINT op")
        out.append(_run(db, fn, path, "ROLLBACK TO op"))
        db.execute("RELEASE op")
    return out


def _transaction(db: sqlite3.Connection, fns: list[WriteOp[Any]], path: Path) -> _Outcome:
    """One batch: BEGIN, the ops, COMMIT. A failed BEGIN or COMMIT fails every op."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return ("begin", exc)
    try:
        out = _ops(db, fns, path)
        if db.in_transaction:  # a lone op that failed rolled it back
            db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # sqlite already rolled back (it does on SQLITE_FULL and some IOERRs)
        return ("commit", exc)
    return out


class StoreWriter:
    """Owns the database's two connections. Once open, only the writer thread uses the write
    connection: everything else writes by handing an op to ``_write_now`` and reads through
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
        self._r: aiosqlite.Connection | None = None
        self._ops: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # Ops queued and not yet answered: a caller waits for room past this (back-pressure).
        self._room = asyncio.Semaphore(max_batch * 16)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exited: asyncio.Future[None] | None = None
        self._closed = False
        self._healthy = True
        self._last_error: str | None = None
        self.commits = 0
        self.ops_written = 0

    # ---- lifecycle ------------------------------------------------------------------------

    async def open(self) -> Self:
        if self._thread is not None:
            raise StoreError(f"{self.path}: store is already open")
        if not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: cannot open database: no such directory "
                             f"{self.path.parent}")
        private_files(self.path)
        loop = self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._exited = loop.create_future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,),
                                        name=f"store-writer:{self.path.name}", daemon=True)
        self._thread.start()
        try:
            await asyncio.shield(ready)
            self._r = await self._connect_reader()
        except BaseException:
            self._closed = True
            self._ops.put(None)
            await asyncio.shield(self._exited)
            await self._close_reader()
            raise
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Refuse new writes, let the thread finish every op queued before, then close."""
        if self._closed:
            return
        self._closed = True
        if self._exited is not None:
            self._ops.put(None)
            await asyncio.shield(self._exited)
            # The thread said it is done just before it returns: wait for that return, so a
            # closed store has no thread left (off the loop: a join blocks).
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join)
        await self._close_reader()

    async def _close_reader(self) -> None:
        if self._r is not None:
            await self._r.close()
        self._r = None

    def _prepare(self, db: sqlite3.Connection) -> str:
        """Settings every connection gets; returns the journal mode sqlite agreed to."""
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        for statement in FIRST_OPEN:  # before WAL: it only counts on a new, empty file
            db.execute(statement)
        return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])

    async def _connect_reader(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            mode = self._prepare(db)
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"{self.path}: cannot open database: {exc}") from exc
        if mode.lower() != "wal":
            log.warning("store_wal_unavailable", path=str(self.path), journal_mode=mode)
        try:
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        def version() -> int:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

        def refuse(found: int) -> StoreError:
            return StoreError(
                f"{self.path}: database schema version {found} is newer than this aftercall "
                f"supports (version {LATEST_VERSION}); upgrade aftercall or use another database"
            )

        try:
            found = version()
            if found > LATEST_VERSION:
                raise refuse(found)
            if found == LATEST_VERSION:
                return
            for name, fn in MIGRATION_FUNCTIONS.items():
                db.create_function(name, -1, fn, deterministic=True)
            db.execute("BEGIN IMMEDIATE")
            try:
                found = version()  # another agent may have migrated while we waited
                if found > LATEST_VERSION:
                    raise refuse(found)
                for number in range(found + 1, LATEST_VERSION + 1):
                    for statement in MIGRATIONS[number - 1]:
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {LATEST_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: schema migration failed: {exc}") from exc
        log.info(
            "store_migrated", path=str(self.path), from_version=found, to_version=LATEST_VERSION
        )

    # ---- the writer thread ----------------------------------------------------------------

    def _thread_main(self, ready: asyncio.Future[None]) -> None:
        loop, exited = self._loop, self._exited
        assert loop is not None and exited is not None
        try:
            try:
                db = self._connect_writer()
            except BaseException as exc:  # noqa: BLE001 - said to open(), which raises it
                loop.call_soon_threadsafe(_settle, ready, False, exc)
                return
            loop.call_soon_threadsafe(_settle, ready, True, None)
            try:
                self._serve(db)
            finally:
                db.close()
        finally:
            loop.call_soon_threadsafe(_settle, exited, True, None)

    def _serve(self, db: sqlite3.Connection) -> None:
        """Batches until the close sentinel; what was queued behind it is refused, not lost
        silently."""
        loop = self._loop
        assert loop is not None
        stop = False
        while not stop:
            item = self._ops.get()
            if item is None:
                break
            batch = [item]
            deadline = time.monotonic() + self._batch_delay
            while len(batch) < self._max_batch:
                try:
                    nxt = self._ops.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._ops.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            # A caller that gave up (cancelled) before its turn: its op is not run.
            live = [item for item in batch if not item[1].done()]
            if live:
                outcome = _transaction(db, [fn for fn, _, _ in live], self.path)
                loop.call_soon_threadsafe(self._answer, live, outcome)
        left = []
        while True:
            try:
                item = self._ops.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        if left:
            loop.call_soon_threadsafe(self._refuse, left)

    # ---- back on the event loop -----------------------------------------------------------

    def _answer(self, live: list[_Item], outcome: _Outcome) -> None:
        if isinstance(outcome, tuple):
            what, exc = outcome
            err = self._failure(exc, what)
            for _, fut, _ in live:
                _settle(fut, False, err)
            return
        self._committed(len(live))
        # What must start at the commit starts before any caller resumes: their wake-ups
        # are queued behind it, a loop turn each.
        for (_, fut, then), (ok, value) in zip(live, outcome, strict=True):
            if then is not None and ok and not fut.done():
                try:
                    then(value)
                except Exception:  # noqa: BLE001 - its caller still gets the result
                    log.exception("store_commit_hook_failed", path=str(self.path))
        for (_, fut, _), (ok, value) in zip(live, outcome, strict=True):
            _settle(fut, ok, value)

    def _refuse(self, items: list[_Item]) -> None:
        for _, fut, _ in items:
            _settle(fut, False, StoreError(f"{self.path}: store is closed"))

    def _failure(self, exc: sqlite3.Error, what: str) -> StoreError:
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        self._healthy = False
        self._last_error = f"{what}: {name}: {exc}"
        log.error("store_write_failed", path=str(self.path), error=self._last_error)
        return StoreError(f"{self.path}: cannot write ({name}: {exc})")

    def _committed(self, ops: int) -> None:
        if not self._healthy:
            log.info("store_write_recovered", path=str(self.path))
        self._healthy = True
        self.commits += 1
        self.ops_written += ops

    async def _write_now(self, op: WriteOp[T], *,
                         then: Callable[[T], None] | None = None) -> T:
        """Run ``op`` in the writer thread, in the next transaction; its result or its error.
        Ops of concurrent callers share that transaction's one commit. ``then``: called on
        the loop with the result as soon as the commit is known, before the caller (or any
        caller of that batch) resumes, so what it starts is a loop turn ahead; not called if
        the op or the commit failed, or the caller stopped waiting."""
        if self._closed or self._loop is None:
            raise StoreError(f"{self.path}: store is closed")
        async with self._room:
            if self._closed:
                raise StoreError(f"{self.path}: store is closed")
            fut: asyncio.Future[T] = self._loop.create_future()
            self._ops.put((op, fut, then))
            return await fut

    # ---- health ---------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def health(self) -> bool:
        """Can the store write? Performs a tiny real write through the writer."""
        at = ts(_now())

        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO heartbeat (id, at) VALUES (1, ?)"
                       " ON CONFLICT(id) DO UPDATE SET at = excluded.at", (at,))

        try:
            await self._write_now(op)
        except StoreError:
            return False
        return True

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


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Answer a caller on the loop (it may have stopped waiting: cancelled)."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
