"""Local UDP ports for the lab's SIPp processes: each block handed out once at a time, free
when handed out, and taken from where neither the kernel nor Asterisk picks ports."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from agent.errors import LabError

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Asterisk's RTP ports when no rtp.conf sets them (res_rtp_asterisk's defaults; the lab ships
#: no rtp.conf). Blocks start above it: below are Asterisk's SIP ports and other services'.
ASTERISK_RTP = range(5000, 31001)
#: SIPp 3.6's -mp P binds P (audio RTP) and P + 2 (video RTP), without SO_REUSEADDR; P + 1 and
#: P + 3 are where the far end (Asterisk) sends their RTCP. A block is those four ports.
BLOCK = 4


def ephemeral_range(path: Path = EPHEMERAL) -> range:
    """The ports the kernel hands out for a bind to port 0 (or an unbound send)."""
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


def block_starts(ephemeral: range, avoid: range = ASTERISK_RTP) -> list[int]:
    """The first ports of the blocks above ``avoid`` that lie wholly outside ``ephemeral``:
    no other process's port-0 bind lands there. If the kernel's range covers them all, the
    blocks above ``avoid`` regardless (the check that a block is free still holds)."""
    first = (avoid.stop + BLOCK - 1) // BLOCK * BLOCK
    starts = range(first, 65536 - BLOCK + 1, BLOCK)
    quiet = [p for p in starts
             if p + BLOCK <= ephemeral.start or p >= ephemeral.stop]
    return quiet or list(starts)


def udp_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Blocks of ``BLOCK`` UDP ports for this process's SIPps. A block stays reserved until
    released, so two SIPps started before either binds never get the same ports (picking
    from the kernel's free ports, or at random, let them); every port of a block is checked
    free when it is handed out, so one another process holds is skipped.

    A socket held until SIPp starts cannot keep the block: SIPp sets no SO_REUSEADDR on its
    UDP sockets, so its own bind would fail. The blocks come from outside the kernel's
    ephemeral range instead, where nothing binds by chance in between."""

    def __init__(self, starts: Sequence[int] | None = None, host: str = "127.0.0.1") -> None:
        self._starts = list(starts) if starts is not None else block_starts(ephemeral_range())
        if not self._starts:
            raise LabError("no UDP port block to hand out to SIPp")
        self._host = host
        self._taken: set[int] = set()
        self._lock = threading.Lock()  # phones start in a worker thread, callers on the loop
        # Another process using the same scheme starts elsewhere in the range.
        self._next = secrets.randbelow(len(self._starts))

    def reserve(self) -> int:
        """The first port P of a block P..P+3 that is free now and not handed out already."""
        with self._lock:
            for i in range(len(self._starts)):
                index = (self._next + i) % len(self._starts)
                port = self._starts[index]
                if port in self._taken:
                    continue
                if all(udp_free(p, self._host) for p in range(port, port + BLOCK)):
                    self._taken.add(port)
                    self._next = index + 1  # not the block just released, on the next call
                    return port
        raise LabError(f"no free block of {BLOCK} UDP ports among {len(self._starts)} "
                       f"({self._starts[0]}-{self._starts[-1] + BLOCK - 1}) for SIPp")

    def release(self, port: int) -> None:
        with self._lock:
            self._taken.discard(port)

    @contextlib.contextmanager
    def block(self) -> Iterator[int]:
        """A reserved block for the life of one SIPp run."""
        port = self.reserve()
        try:
            yield port
        finally:
            self.release(port)


#: The process's allocator: every lab SIPp (phones, callers) takes its ports from it.
PORTS = PortAllocator()
