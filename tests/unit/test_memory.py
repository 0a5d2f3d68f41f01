"""The heap trimmer hands the C heap's free pages back (real glibc, this process's RSS) and runs
in a thread of its own until stopped."""

from __future__ import annotations

import os
import threading

from agent.memory import HeapTrimmer, malloc_trim


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_a_trim_gives_the_free_pages_inside_the_heap_back() -> None:
    # Chunks of 600-4,000 B come from glibc (over Python's 512 B small-object limit), as the
    # agent's dict tables, buffers and SQLite pages do. Freeing seven in eight leaves ~24 MB of
    # holes between chunks still in use: glibc keeps them resident (only a free top of the
    # heap is ever given back on its own), as the soak's churn left its heap.
    assert malloc_trim() is not None, "glibc's malloc_trim: the agent's C library"
    chunks: list[bytes | None] = [b"x" * (600 + (i * 97) % 3400) for i in range(12_000)]
    for i in range(len(chunks)):
        if i % 8:
            chunks[i] = None
    before = rss_kb()
    took = HeapTrimmer(trim=malloc_trim()).trim_once()
    after = rss_kb()
    assert before - after > 10_000, (before, after)
    assert took < 0.5
    del chunks


def test_the_trimmer_trims_in_its_own_thread_until_stopped() -> None:
    threads: list[str] = []
    twice = threading.Event()

    def trim() -> None:
        threads.append(threading.current_thread().name)
        if len(threads) >= 2:
            twice.set()

    trimmer = HeapTrimmer(every=0.001, trim=trim)
    trimmer.start()
    assert twice.wait(10)
    trimmer.stop()
    done = trimmer.runs
    assert done >= 2 and set(threads) == {"heap-trim"}
    assert not any(t.name == "heap-trim" for t in threading.enumerate())
    assert trimmer.runs == done  # nothing after stop
    assert trimmer.longest_s >= 0.0


def test_without_malloc_trim_nothing_runs() -> None:
    trimmer = HeapTrimmer(trim=False)  # a C library without malloc_trim (musl, macOS)
    trimmer.start()
    assert not trimmer.available and trimmer.trim_once() == 0.0 and trimmer._thread is None
    trimmer.stop()
