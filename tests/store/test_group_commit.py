"""The PostgreSQL store's group commit (agent/store/postgres/group.py), with a write function
standing in for the database: what goes together, what is written again alone, what is not
written at all."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from agent.store.postgres.group import Failed, Grouped


class Writes:
    """Records each group it is given; holds the first one until ``release`` is set."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            await self.release.wait()
        if any(i < 0 for i in items):
            raise ValueError(f"bad item in {list(items)}")
        return [i * 10 for i in items]


async def test_items_waiting_for_a_write_in_flight_go_together_each_with_its_result() -> None:
    writes = Writes()
    group = Grouped(writes)
    first = asyncio.ensure_future(group(1))
    await asyncio.sleep(0)  # the first write is in flight
    rest = [asyncio.ensure_future(group(i)) for i in (2, 3, 4)]
    writes.release.set()
    assert await first == 10 and await asyncio.gather(*rest) == [20, 30, 40]
    assert writes.groups == [[1], [2, 3, 4]]


async def test_items_of_one_key_never_share_a_write() -> None:
    writes = Writes()
    group = Grouped(writes, key=lambda i: i % 2)
    first = asyncio.ensure_future(group(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group(i)) for i in (2, 3, 4, 5)]
    writes.release.set()
    await asyncio.gather(first, *rest)
    assert writes.groups == [[1], [2, 3], [4, 5]]


async def test_items_sharing_any_of_their_keys_never_share_a_write() -> None:
    """An intake's keys are its call and each number it texts: two that share one wait."""
    writes = Writes()
    group = Grouped(writes, keys=lambda i: {i % 3, i % 5 + 10})
    first = asyncio.ensure_future(group(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group(i)) for i in (1, 2, 6, 7)]  # 6: 1's 0; 7: 2's 12
    writes.release.set()
    await asyncio.gather(first, *rest)
    assert writes.groups == [[0], [1, 2], [6, 7]]


async def test_a_result_that_says_failed_is_raised_in_its_own_caller_only() -> None:
    async def write(items: Sequence[int]) -> list[int | Failed]:
        return [Failed(ValueError(i)) if i < 0 else i for i in items]

    group = Grouped(write)
    got = await asyncio.gather(group(1), group(-2), group(3), return_exceptions=True)
    assert got[0] == 1 and got[2] == 3 and isinstance(got[1], ValueError)


async def test_a_failed_group_is_written_again_item_by_item_so_one_bad_item_fails_alone() -> None:
    writes = Writes()
    group = Grouped(writes)
    first = asyncio.ensure_future(group(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group(i)) for i in (2, -3, 4)]
    writes.release.set()
    await first
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == 20 and isinstance(results[1], ValueError) and results[2] == 40
    assert writes.groups[1:] == [[2, -3, 4], [2], [-3], [4]]


async def test_an_item_whose_caller_stopped_waiting_is_not_written() -> None:
    writes = Writes()
    group = Grouped(writes)
    first = asyncio.ensure_future(group(1))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(group(2))
    kept = asyncio.ensure_future(group(3))
    await asyncio.sleep(0)
    gone.cancel()
    writes.release.set()
    assert await first == 10 and await kept == 30
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert writes.groups == [[1], [3]]
