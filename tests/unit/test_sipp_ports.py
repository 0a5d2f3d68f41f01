"""SIPp's ports: a block is handed out once until released, is free when handed out, and lies
outside the ranges the kernel and Asterisk pick ports from."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agent.lab import ports
from agent.lab.ports import BLOCK, PortAllocator


@pytest.fixture
def two_free_blocks() -> Iterator[list[int]]:
    """Two blocks the process's allocator vouches are free (and keeps from everyone else)."""
    blocks = [ports.PORTS.reserve(), ports.PORTS.reserve()]
    yield blocks
    for b in blocks:
        ports.PORTS.release(b)


def _span(block: int) -> set[int]:
    return set(range(block, block + BLOCK))


def test_blocks_reserved_before_any_sipp_binds_never_overlap() -> None:
    # The lab starts seven phones before any of them has bound its ports: nothing on the
    # machine shows the first one's block as taken when the second one is picked.
    allocator = PortAllocator()
    blocks = [allocator.reserve() for _ in range(50)]
    spans = [_span(b) for b in blocks]
    assert sum(len(s) for s in spans) == len(set().union(*spans))
    assert all(b % 2 == 0 for b in blocks)  # RTP on even ports, RTCP on the odd one above


def test_a_reserved_block_is_not_handed_out_again_until_released(
        two_free_blocks: list[int]) -> None:
    allocator = PortAllocator(starts=two_free_blocks[:1])
    block = allocator.reserve()
    with pytest.raises(ports.LabError, match="no free block"):
        allocator.reserve()
    allocator.release(block)
    assert allocator.reserve() == block


@pytest.mark.parametrize("taken", range(BLOCK))
def test_a_block_with_any_port_taken_is_skipped(two_free_blocks: list[int], taken: int) -> None:
    first, second = two_free_blocks
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", first + taken))  # e.g. another program's socket on P + 2
        allocator = PortAllocator(starts=[first, second])
        assert allocator.reserve() == second
        with pytest.raises(ports.LabError, match=f"{first}-{second + BLOCK - 1}"):
            allocator.reserve()


def test_the_block_context_releases_it(two_free_blocks: list[int]) -> None:
    allocator = PortAllocator(starts=two_free_blocks[:1])
    with allocator.block() as block:
        assert block == two_free_blocks[0]
    with allocator.block() as again:
        assert again == block


def test_blocks_lie_above_asterisks_rtp_range_and_outside_the_kernels() -> None:
    starts = ports.block_starts(range(32768, 61000))
    spans = set().union(*(_span(p) for p in starts))
    assert min(spans) > ports.ASTERISK_RTP.stop - 1 and max(spans) <= 65535
    assert not spans & set(range(32768, 61000))
    assert not spans & set(ports.ASTERISK_RTP)
    assert {31004, 32764, 61000, 65532} <= set(starts)


def test_a_kernel_range_over_everything_still_leaves_blocks_above_asterisk() -> None:
    starts = ports.block_starts(range(1024, 65536))
    assert starts and min(starts) >= ports.ASTERISK_RTP.stop and max(starts) + BLOCK <= 65536


def test_the_kernel_range_is_read_from_proc(tmp_path) -> None:
    f = tmp_path / "ip_local_port_range"
    f.write_text("40000\t50000\n")
    assert ports.ephemeral_range(f) == range(40000, 50001)
    assert ports.ephemeral_range(tmp_path / "absent") == range(32768, 61000)
