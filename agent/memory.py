"""The agent's resident memory kept to its live data: the C heap's free pages handed back, off the loop.

What a soak showed (bench/capacity.py --soak --mem-probe, 50 calls/s): after the first minutes
nothing live grows (Python's allocated blocks, glibc's bytes in use and SQLite's memory are
flat), yet the RSS kept rising in 0.25-0.5 MB steps: glibc keeps every page a freed chunk
leaves inside its heaps resident, and its main heap's top only moves up (a chunk still in use
near the top pins it). glibc's ``malloc_trim(0)`` gives the free pages anywhere in every heap
back to the system (``MADV_DONTNEED``), so the resident size follows what is in use. It runs
here in a thread of its own every ``TRIM_EVERY_S``; ctypes drops the GIL for the call, so the
loop that reads AMI runs on meanwhile. The trim holds each heap's lock while it walks it (one
to a few hundred microseconds of CPU on the agent's ~20 MB heap): a malloc of the loop's at
that very moment waits for it, twice a minute at most. ``/metrics`` shows the trims, their CPU
and the longest in wall time, which on a busy machine includes the thread being descheduled
mid-trim (``aftercall_heap_trims_total``, ``aftercall_heap_trim_cpu_seconds_total``,
``aftercall_heap_trim_seconds_max``).

Where the C library has no ``malloc_trim`` (musl, macOS) nothing runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

#: Seconds between two trims. A trim costs ~0.1-0.3 ms of one thread; the pages it hands back
#: and the heap then takes again cost a page fault each (a few MB a minute at 50 calls/s).
TRIM_EVERY_S = 30.0

Trim = Callable[[], object]


def malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


class HeapTrimmer:
    """Trims the C heap every ``every`` seconds in its own daemon thread, from ``start`` to
    ``stop``; counts the trims and times the longest (read by /metrics at each scrape)."""

    def __init__(self, every: float = TRIM_EVERY_S, trim: Trim | bool = True) -> None:
        """``trim``: True for glibc's own (if any), False for none, or the call to make."""
        self.every = every
        self._trim = (malloc_trim() if trim is True else None if trim is False else trim)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.longest_s = 0.0  # wall time: with the thread descheduled mid-trim on a busy machine
        self.cpu_s = 0.0  # what the trims cost this thread in all

    @property
    def available(self) -> bool:
        return self._trim is not None

    def start(self) -> None:
        if self._trim is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread (at once: it waits on an event, not a sleep). Called off the loop or
        at the end of a run: the join lasts one trim at most."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def trim_once(self) -> float:
        """One trim now, in the calling thread; its duration in seconds."""
        if self._trim is None:
            return 0.0
        t0, c0 = time.perf_counter(), time.thread_time()
        self._trim()
        took = time.perf_counter() - t0
        self.cpu_s += time.thread_time() - c0
        self.runs += 1
        self.longest_s = max(self.longest_s, took)
        return took

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.trim_once()
