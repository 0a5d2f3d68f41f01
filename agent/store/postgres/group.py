"""Group commit for the PostgreSQL store: writes (and reads) that arrive while one is in flight
go together.

An agent under load has many records waiting for the database at once (the record pipeline
runs dozens), and each statement costs a round trip, a commit and, on a machine whose cores
are busy, a wait to be scheduled on both ends. Here one write is in flight at a time; the
items that arrive meanwhile wait and go in the next one, as one statement. An idle agent's
write goes at once, alone. If a grouped write fails, its items are written again one by one,
so one bad item fails only its own caller. Reads gain the same way: one round trip for all
the policy reads waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Failed:
    """A result that ``write`` gives for an item that failed alone: raised in its caller."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class Grouped(Generic[T, R]):
    """``await group(item)`` -> that item's result from ``write(items) -> results`` (in the
    items' order; a ``Failed`` result is raised in its caller). ``key``: items with the same
    key never share a write (a statement may not change one row twice); ``keys``: the same,
    for items that have several (two items that share any one go in different writes). At
    most ``limit`` items per write."""

    def __init__(self, write: Callable[[Sequence[T]], Awaitable[Sequence[R | Failed]]], *,
                 key: Callable[[T], Hashable | None] = lambda _: None,
                 keys: Callable[[T], Iterable[Hashable]] | None = None,
                 limit: int = 64) -> None:
        self._write = write
        self._keys = keys or (lambda item: () if (k := key(item)) is None else (k,))
        self._limit = limit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # statements sent, for tests and benchmarks
        self.items = 0

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._run(), name="pg-group-commit")
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch: list[tuple[T, asyncio.Future[R]]] = []
                rest: list[tuple[T, asyncio.Future[R]]] = []
                keys: set[Hashable] = set()
                for item, future in self._waiting:
                    if future.done():  # its caller gave up waiting (cancelled): not written
                        continue
                    ks = set(self._keys(item))
                    if len(batch) < self._limit and keys.isdisjoint(ks):
                        batch.append((item, future))
                        keys |= ks
                    else:
                        rest.append((item, future))
                self._waiting = rest
                await self._flush(batch)
        except BaseException as exc:  # cancelled (the loop stops): nobody may wait forever
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception)
                                         else asyncio.CancelledError())
            self._waiting = []
            raise
        finally:
            self._task = None

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers, raised in each of them
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            for item, future in batch:  # one bad item must not fail the others
                try:
                    [result] = await self._write([item])
                except Exception as one:  # noqa: BLE001 - raised in its own caller
                    _settle(future, exc=one)
                else:
                    _settle(future, result)
            return
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        self.writes += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[R], result: R | Failed | None = None, *,
            exc: BaseException | None = None) -> None:
    if future.done():  # its caller was cancelled: the item was written all the same
        return
    if isinstance(result, Failed):
        exc = result.exc
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
