"""The PostgreSQL store's connection pool: opening (one clear error), migrations, transactions,
health, and how rows come back as MessageRows."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog

from agent.errors import StoreError
from agent.store.base import MessageRow, message_from_row
from agent.store.postgres.names import hold_name
from agent.store.postgres.numbers import lock_numbers_sql, number_keys
from agent.store.postgres.schema import LATEST_VERSION, MIGRATIONS
from agent.store.stamps import ts

log = structlog.get_logger(__name__)

# Any aftercall migrating this database holds this lock: two agents starting at once migrate
# once, the second one finds the work done.
_MIGRATION_LOCK = 0x616674657263616C  # "aftercal"


def describe(url: str) -> str:
    """``PostgreSQL database NAME on HOST:PORT``, for errors and logs: never the password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost (socket)"
    try:
        port = parts.port or 5432
    except ValueError:
        port = "?"
    name = unquote(parts.path.lstrip("/")) or (unquote(parts.username or "") or "(default)")
    return f"PostgreSQL database {name!r} on {host}:{port}"


class Statement:
    """A statement's numbered parameters as its text is built: ``p(value)`` -> ``$n``. Lets
    one piece of SQL (a call's upsert, a judgement's outcomes) stand alone or be a CTE of a
    larger statement."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def p(self, value: Any, cast: str = "") -> str:
        self.params.append(value)
        return f"${len(self.params)}{'::' + cast if cast else ''}"


def utc(dt: datetime | None) -> datetime | None:
    """asyncpg wants aware times for timestamptz; a naive one is UTC, as in the SQLite store."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


def message_row(r: asyncpg.Record) -> MessageRow:
    return message_from_row(r, r["smsc_ids"])


async def event(
    conn: asyncpg.Connection,
    message_id: str,
    at: datetime,
    state: str,
    reason: str | None,
    detail: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO message_events (message_id, at, state, reason, detail)"
        " VALUES ($1,$2,$3,$4,$5)",
        message_id, at, state, reason, detail,
    )


# Errors that say "the database is not reachable or not taking writes", not "this op is wrong".
_ENVIRONMENTAL: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.OperatorInterventionError,  # admin shutdown, cancelled
    asyncpg.ReadOnlySQLTransactionError,
)


class SessionLocks:
    """``PgPool._tx(session_locks=...)``: whether the caller's statements took any lock."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


class PgPool:
    """Owns the pool. Each write is one short transaction on a pooled connection; PostgreSQL
    flushes concurrent commits' WAL together, so concurrent callers share fsyncs without a
    writer queue in front (and two agents never hold each other's row locks for a batch).

    ``owner`` names this agent among those sharing the database (claims carry it)."""

    def __init__(
        self,
        url: str,
        *,
        owner: str | None = None,
        min_size: int = 2,
        max_size: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.owner = owner
        # What this agent's message rows say wrote them (``messages.written_by``): its name,
        # else an id of this process, so that its own rows are told apart without one.
        self.writer = owner or f"pid{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._name_conn: asyncpg.Connection | None = None  # holds the agent's name (names.py)
        self._closed = False
        self._letting_go: set[asyncio.Task[None]] = set()  # see ``_let_go``
        self._healthy = True
        self._last_error: str | None = None
        self.commits = 0

    # ---- lifecycle ------------------------------------------------------------------------

    async def open(self) -> Self:
        try:
            # One attempt, bounded: a wrong URL fails the start with one line, no retry storm.
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                command_timeout=60,
                server_settings={"application_name": f"aftercall:{self.owner or '-'}"},
                # asyncpg's default sends a reset query (advisory unlock, CLOSE ALL, UNLISTEN,
                # RESET ALL) each time a connection goes back to the pool: a round trip per
                # statement read through the pool, and about a quarter of all round trips an
                # agent makes per call. This store leaves no session state on a connection it
                # gives back (its advisory locks are transaction-scoped, or held by the session
                # and let go before the connection goes back, or gone with a connection closed;
                # it never LISTENs or SETs), and asyncpg still rolls back a transaction left
                # open before this runs.
                reset=_no_session_state,
            )
        except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError,
                asyncpg.InvalidPasswordError) as exc:
            raise StoreError(f"{self.where}: cannot connect: {_reason(exc)}") from None
        except (*_ENVIRONMENTAL, asyncpg.PostgresError, ValueError) as exc:
            raise StoreError(f"{self.where}: cannot connect: {_reason(exc)}") from None
        try:
            await self._migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def hold_name(self) -> None:
        """While this store is open, no other agent runs with its name (names.py); a second
        one is refused at its start. Only a running agent holds its name (not a report)."""
        if self.owner is None or self._name_conn is not None:
            return
        try:
            self._name_conn = await hold_name(self.url, self.owner, self.where,
                                              timeout=self._connect_timeout)
        except (*_ENVIRONMENTAL, asyncpg.PostgresError) as exc:
            raise StoreError(f"{self.where}: cannot connect: {_reason(exc)}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._name_conn is not None:
            await self._name_conn.close()
            self._name_conn = None
        if self._letting_go:
            await asyncio.gather(*self._letting_go, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _migrate(self) -> None:
        def refuse(found: int) -> StoreError:
            return StoreError(
                f"{self.where}: database schema version {found} is newer than this aftercall "
                f"supports (version {LATEST_VERSION}); upgrade aftercall or use another database"
            )

        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS aftercall_schema (version integer NOT NULL)"
                )
                found = await conn.fetchval("SELECT max(version) FROM aftercall_schema") or 0
                if found > LATEST_VERSION:
                    raise refuse(found)
                if found == LATEST_VERSION:
                    return
                for number in range(found + 1, LATEST_VERSION + 1):
                    for statement in MIGRATIONS[number - 1]:
                        await conn.execute(statement)
                await conn.execute("DELETE FROM aftercall_schema")
                await conn.execute("INSERT INTO aftercall_schema VALUES ($1)", LATEST_VERSION)
        except (*_ENVIRONMENTAL, asyncpg.PostgresError) as exc:
            raise StoreError(f"{self.where}: schema migration failed: {_reason(exc)}") from None
        log.info("store_migrated", database=self.where, from_version=found,
                 to_version=LATEST_VERSION)

    # ---- health ---------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def health(self) -> bool:
        """Can the store write? Performs a tiny real write (this agent's heartbeat row)."""
        try:
            async with self._tx() as conn:
                await conn.execute(
                    "INSERT INTO heartbeat (agent, at) VALUES ($1, now())"
                    " ON CONFLICT (agent) DO UPDATE SET at = excluded.at",
                    self.owner or "-",
                )
        except StoreError:
            return False
        return True

    # ---- transactions and reads -----------------------------------------------------------

    @asynccontextmanager
    async def _tx(self, *, single: bool = False, numbers: Collection[str] = (),
                  session_locks: SessionLocks | None = None
                  ) -> AsyncIterator[asyncpg.Connection]:
        """One write transaction. Errors become StoreError; environmental ones mark the store
        unhealthy until the next transaction that commits. ``single``: the caller runs one
        statement, which is its own transaction (no BEGIN/COMMIT round trips on the hot path;
        a statement with data-modifying CTEs is still all or nothing). ``numbers``: the
        transaction first holds these numbers' locks (numbers.py), taken with its BEGIN
        in one round trip; a statement after that sees what other agents committed under
        them. ``session_locks``: as ``single`` (each statement commits on its own), on a
        connection whose session the caller's statements lock numbers for (numbers.py): they
        are let go after the last statement, off the caller's path (``_let_go``), unless the
        caller says none was taken; if anything fails the connection is closed, and its locks
        go with it."""
        if self._closed or self._pool is None:
            raise StoreError(f"{self.where}: store is closed")
        try:
            if single:
                async with self._pool.acquire() as conn:
                    yield conn
            elif session_locks is not None:
                pool = self._pool
                conn = await pool.acquire()
                try:
                    yield conn
                except BaseException:
                    conn.terminate()
                    await pool.release(conn)
                    raise
                if not session_locks.held:
                    await pool.release(conn)
                else:
                    task = asyncio.get_running_loop().create_task(self._let_go(pool, conn))
                    self._letting_go.add(task)
                    task.add_done_callback(self._letting_go.discard)
            elif numbers:
                async with self._pool.acquire() as conn:
                    try:
                        await conn.execute("BEGIN; " + lock_numbers_sql(number_keys(numbers)))
                        yield conn
                    except Exception:
                        with suppress(*_ENVIRONMENTAL, asyncpg.PostgresError):
                            await conn.execute("ROLLBACK")
                        raise
                    # cancelled: the pool's release rolls back what is still open
                    await conn.execute("COMMIT")
            else:
                async with self._pool.acquire() as conn, conn.transaction():
                    yield conn
        except _ENVIRONMENTAL as exc:
            self._healthy = False
            self._last_error = f"{type(exc).__name__}: {_reason(exc)}"
            log.error("store_write_failed", database=self.where, error=self._last_error)
            raise StoreError(f"{self.where}: cannot write ({self._last_error})") from None
        except asyncpg.PostgresError as exc:
            raise StoreError(f"{self.where}: write refused: {_reason(exc)}") from None
        if not self._healthy:
            log.info("store_write_recovered", database=self.where)
        self._healthy = True
        self.commits += 1

    async def _let_go(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        """A connection's session locks, then the connection (back to the pool)."""
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()")
        except Exception as exc:  # noqa: BLE001 - closing the connection lets them go
            conn.terminate()
            log.warning("store_unlock_failed", database=self.where, error=_reason(exc))
        except BaseException:
            conn.terminate()
            raise
        finally:
            await pool.release(conn)

    async def _read(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        if self._closed or self._pool is None:
            raise StoreError(f"{self.where}: store is not open")
        try:
            return list(await self._pool.fetch(sql, *params))
        except (*_ENVIRONMENTAL, asyncpg.PostgresError) as exc:
            raise StoreError(f"{self.where}: read failed: {_reason(exc)}") from None

    async def report_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The reports' SQL (written for SQLite: ``?`` placeholders, times as fixed-width UTC
        text, ``LIMIT -1`` for no limit) run here, rows given back in that same form."""
        args: list[Any] = []
        parts = sql.split("?")
        out = parts[0]
        for i, part in enumerate(parts[1:]):
            value = params[i]
            if isinstance(value, str) and _STAMP.fullmatch(value):
                value = datetime.fromisoformat(value)
            if value == -1 and out.rstrip().upper().endswith("LIMIT"):
                value = None  # PostgreSQL's "no limit"
            args.append(value)
            out += f"${len(args)}{part}"
        rows = await self._read(out, *args)
        return [{k: ts(v) if isinstance(v, datetime) else v for k, v in r.items()}
                for r in rows]

    async def _read_messages(self, sql: str, *params: Any) -> list[MessageRow]:
        return [message_row(r) for r in await self._read(sql, *params)]


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing to undo (see ``open``)."""


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _reason(exc: BaseException) -> str:
    """The driver's own words, on one line; connection errors quote no URL, so no password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return text


async def lock_smsc_ids(conn: asyncpg.Connection, gateway: str, ids: Sequence[str]) -> None:
    """Serialise "record a submit's ids" and "match a receipt by id" for the same ids, across
    agents: without it, a receipt arriving (at any agent) while the submit is being recorded
    sees no id, the submit sees no receipt, and the receipt stays unmatched for good."""
    if ids:  # one round trip; in a fixed order, so two multi-part submits cannot deadlock
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(k)) FROM"
            " (SELECT DISTINCT $1 || '|' || i AS k FROM unnest($2::text[]) AS i ORDER BY 1) s",
            gateway, list(ids))


def _sequence(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))
