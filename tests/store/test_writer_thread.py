"""The SQLite writer thread: ops run in the order queued, one commit per group, each caller gets
its own result or error, a stop finishes what was queued, and the event loop never waits on it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.store.sqlite import SqliteStore


def _append(value: int):  # noqa: ANN202 - an op
    def op(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO seen (v) VALUES (?)", (value,))
        return value
    return op


def _ids(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT v FROM seen ORDER BY rowid")]
    finally:
        con.close()


async def _opened(path: Path) -> SqliteStore:
    """An open store with a scratch table ``seen`` the ops below write to."""
    store = await SqliteStore(path).open()
    await store._write_now(lambda db: db.execute("CREATE TABLE seen (v INTEGER)"))
    return store


@contextlib.asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    store = await _opened(path)
    try:
        yield store
    finally:
        await store.close()


def _gate() -> tuple[threading.Event, threading.Event, object]:
    """An op that holds the writer thread until released: (started, release, op)."""
    started, release = threading.Event(), threading.Event()

    def op(db: sqlite3.Connection) -> None:
        started.set()
        assert release.wait(10)
    return started, release, op


async def test_ops_run_in_the_order_they_were_queued_and_answer_their_own_caller(
    db_path: Path,
) -> None:
    async with opened(db_path) as store:
        started, release, hold = _gate()
        first = asyncio.create_task(store._write_now(hold))
        await asyncio.to_thread(started.wait, 10)
        # queued while the thread is busy: they all go in the next transaction, in this order
        tasks = [asyncio.create_task(store._write_now(_append(i))) for i in range(100, 150)]
        await asyncio.sleep(0)
        before = store.commits
        release.set()
        assert await asyncio.gather(*tasks) == list(range(100, 150))
        await first
        assert store.commits - before <= 2
    assert _ids(db_path) == list(range(100, 150))


async def test_an_op_that_fails_fails_alone_with_its_own_error(db_path: Path) -> None:
    def bug(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO seen (v) VALUES (7)")
        raise ValueError("bug in one op")

    def bad_sql(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO no_such_table VALUES (1)")

    async with opened(db_path) as store:
        started, release, hold = _gate()
        first = asyncio.create_task(store._write_now(hold))
        await asyncio.to_thread(started.wait, 10)
        tasks = [asyncio.create_task(store._write_now(op))
                 for op in (_append(1), bug, bad_sql, _append(2))]
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await first
        assert results[0] == 1 and results[3] == 2
        assert isinstance(results[1], ValueError) and "bug in one op" in str(results[1])
        assert isinstance(results[2], StoreError) and "no_such_table" in str(results[2])
        assert store.healthy
    assert _ids(db_path) == [1, 2]  # the failed op's own insert was rolled back


async def test_an_op_alone_in_its_batch_that_fails_leaves_nothing_and_the_next_one_writes(
    db_path: Path,
) -> None:
    """A batch of one op has no savepoint of its own (its transaction is one): what it wrote
    before failing is rolled back all the same, its caller gets its error, the store stays
    healthy and the next op writes."""
    def bug(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO seen (v) VALUES (7)")
        raise ValueError("bug in one op")

    def bad_sql(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO seen (v) VALUES (8)")
        db.execute("INSERT INTO no_such_table VALUES (1)")

    async with opened(db_path) as store:
        with pytest.raises(ValueError, match="bug in one op"):
            await store._write_now(bug)
        with pytest.raises(StoreError, match="no_such_table"):
            await store._write_now(bad_sql)
        assert store.healthy
        assert await store._write_now(_append(3)) == 3
    assert _ids(db_path) == [3]


async def test_a_stop_finishes_every_op_queued_before_it_and_refuses_later_ones(
    db_path: Path,
) -> None:
    store = await _opened(db_path)
    started, release, hold = _gate()
    first = asyncio.create_task(store._write_now(hold))
    await asyncio.to_thread(started.wait, 10)
    tasks = [asyncio.create_task(store._write_now(_append(i))) for i in range(20)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)
    with pytest.raises(StoreError, match="closed"):
        await store._write_now(_append(99))
    release.set()
    await closing
    assert await asyncio.gather(*tasks) == list(range(20))
    await first
    assert store._thread is not None and not store._thread.is_alive()
    assert _ids(db_path) == list(range(20))


async def test_the_event_loop_runs_while_the_writer_thread_is_busy(db_path: Path) -> None:
    async with opened(db_path) as store:
        started, release, hold = _gate()
        write = asyncio.create_task(store._write_now(hold))
        await asyncio.to_thread(started.wait, 10)
        ticks = 0
        for _ in range(5):  # the loop keeps turning (an AMI read would be served)
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 5 and not write.done()
        release.set()
        await write


async def test_a_caller_that_gave_up_before_its_turn_has_its_op_skipped(db_path: Path) -> None:
    async with opened(db_path) as store:
        started, release, hold = _gate()
        first = asyncio.create_task(store._write_now(hold))
        await asyncio.to_thread(started.wait, 10)
        gone = asyncio.create_task(store._write_now(_append(1)))
        kept = asyncio.create_task(store._write_now(_append(2)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        release.set()
        assert await kept == 2
        await first
    assert _ids(db_path) == [2]


async def test_a_database_that_cannot_open_is_refused_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not a database file at all, sqlite refuses it" * 100)
    with pytest.raises(StoreError, match=str(bad)):
        await SqliteStore(bad).open()


async def test_what_runs_at_the_commit_runs_before_any_caller_resumes_and_only_when_written(
    db_path: Path,
) -> None:
    """``then`` of each op of a batch runs, with its result, before any caller of that batch
    resumes; not for an op that failed, nor for a caller that gave up; one that raises is
    logged and its caller still gets its result."""
    seen: list[object] = []

    def bug(db: sqlite3.Connection) -> None:
        raise ValueError("bug in one op")

    def broken(value: object) -> None:
        raise RuntimeError("a hook that fails")

    async def caller(name: str, op: object, then: object) -> None:
        try:
            seen.append((name, await store._write_now(op, then=then)))  # type: ignore[arg-type]
        except ValueError:
            seen.append((name, "failed"))

    async with opened(db_path) as store:
        started, release, hold = _gate()
        first = asyncio.create_task(store._write_now(hold))
        await asyncio.to_thread(started.wait, 10)
        tasks = [asyncio.create_task(caller("a", _append(1), lambda v: seen.append(("then", v)))),
                 asyncio.create_task(caller("b", bug, lambda v: seen.append(("then b", v)))),
                 asyncio.create_task(caller("c", _append(2), broken))]
        gave_up = asyncio.create_task(
            store._write_now(_append(3), then=lambda v: seen.append(("then gave up", v))))
        await asyncio.sleep(0)
        gave_up.cancel()
        release.set()
        await asyncio.gather(*tasks)
        await first
        assert seen[0] == ("then", 1)
        assert sorted(map(str, seen[1:])) == ["('a', 1)", "('b', 'failed')", "('c', 2)"]
    assert _ids(db_path) == [1, 2]
