"""The Linkedids of the calls completed lately, in memory fixed at start (no Python object per call).

The tracker remembers the last few thousand completed calls so that a straggler event of one
(a late Hangup, a Cdr) is not taken for a new call. A dict of their ids kept each id string
alive for as long as 8,192 more calls took (164 s at 50 calls/s): the longest-lived of a
call's objects, allocated among its short-lived garbage in Python's object pools, where each
one still alive keeps its pool and the 1 MiB arena around it from being handed back. Here a
call is its id's 64-bit hash in three arrays made once: a ring in completion order (the
oldest leaves when a new one comes) and an open-addressing index into it (linear probing,
deletion by backward shift, at most half full). Two ids with the same 64-bit hash would be
taken for one: about 1 in 2**51 per call with 8,192 remembered.

Pure: no asyncio.
"""

from __future__ import annotations

from array import array


class RecentKeys:
    """A set of the keys among the last ``cap`` added: a key added again while held keeps its
    place (as in a dict); ``discard`` takes one out early, and its place in the ring stays
    empty until the ring comes round to it."""

    __slots__ = ("_hashes", "_head", "_len", "_mask", "_places", "_ring", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = max(0, cap)
        size = 1 << max(3, (2 * self.cap).bit_length())  # more than twice cap: probes stay short
        self._mask = size - 1
        self._hashes = array("q", bytes(8 * size))  # the index: a key's hash, 0 = free
        self._places = array("q", bytes(8 * size))  # ... and its place in the ring
        self._ring = array("q", bytes(8 * max(1, self.cap)))  # hashes in order, 0 = gone
        self._head = 0  # the ring's next place (its oldest entry)
        self._len = 0

    @staticmethod
    def _hash(key: str) -> int:
        return hash(key) or 1  # 0 marks a free slot

    def _find(self, h: int) -> int:
        """The index slot holding ``h``, or the free slot where it would go (as ~slot)."""
        hashes, mask = self._hashes, self._mask
        i = h & mask
        while True:
            got = hashes[i]
            if got == h:
                return i
            if got == 0:
                return ~i
            i = (i + 1) & mask

    def __contains__(self, key: str) -> bool:
        return self._find(self._hash(key)) >= 0

    def __len__(self) -> int:
        return self._len

    def add(self, key: str) -> None:
        """Remembered as the newest, unless it is already (then its place stays, as a dict's
        does); the oldest goes when ``cap`` are held."""
        if self.cap == 0:
            return
        h = self._hash(key)
        i = self._find(h)
        if i >= 0:
            return
        head = self._head
        old = self._ring[head]
        if old:
            self._delete(self._find(old))
            i = self._find(h)  # the shift may have moved the free slot
        i = ~i
        self._hashes[i] = h
        self._places[i] = head
        self._ring[head] = h
        self._head = (head + 1) % self.cap
        self._len += 1

    def discard(self, key: str) -> None:
        i = self._find(self._hash(key))
        if i >= 0:
            self._ring[self._places[i]] = 0
            self._delete(i)

    def _delete(self, i: int) -> None:
        # Backward shift: each later entry of the probe run that may sit at ``i`` moves there,
        # so a lookup never meets a hole before its key.
        hashes, places, mask = self._hashes, self._places, self._mask
        j = i
        while True:
            j = (j + 1) & mask
            h = hashes[j]
            if h == 0:
                break
            home = h & mask
            if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue  # its probe run starts after the hole: it stays
            hashes[i], places[i] = h, places[j]
            i = j
        hashes[i] = 0
        self._len -= 1
