"""What the tracker remembers of completed calls: exact, bounded, and no object per call."""

from __future__ import annotations

import gc
import random
import re
import sys
from pathlib import Path

import pytest

from agent.ami.transcript import iter_messages
from agent.calls.recent import RecentKeys
from agent.calls.tracker import CallTracker
from agent.models import Trigger

AMI = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


class _Ring:
    """The same contract written plainly: a ring of keys in the order added."""

    def __init__(self, cap: int) -> None:
        self.ring: list[str | None] = [None] * cap
        self.head = 0

    def add(self, key: str) -> None:
        if self.ring and key not in self.ring:
            self.ring[self.head] = key
            self.head = (self.head + 1) % len(self.ring)

    def discard(self, key: str) -> None:
        self.ring = [None if k == key else k for k in self.ring]


@pytest.mark.parametrize("cap", [0, 1, 2, 7, 64, 300])
@pytest.mark.parametrize("discards", [False, True])
def test_it_answers_as_the_plain_ring_and_without_discards_as_a_dict(
    cap: int, discards: bool
) -> None:
    """Random adds (new and repeated), discards and look-ups, against a plain ring and, with
    no discards (the tracker's own path), against the dict the tracker kept before: its
    insertion order kept on a repeated add, the oldest dropped past ``cap``."""
    rnd = random.Random(cap)
    model: dict[str, None] = {}
    plain = _Ring(cap)
    recent = RecentKeys(cap)
    keys = [f"lid-{i}" for i in range(3 * cap + 5)]
    for step in range(20_000):
        key = rnd.choice(keys)
        op = rnd.random()
        if op < 0.6:
            recent.add(key)
            plain.add(key)
            if cap:
                model[key] = None
            while len(model) > cap:
                del model[next(iter(model))]
        elif op < 0.7 and discards:
            recent.discard(key)
            plain.discard(key)
        assert (key in recent) == (key in plain.ring), step
        assert discards or (key in recent) == (key in model), step
    assert {k for k in keys if k in recent} == set(plain.ring) - {None}
    assert len(recent) == len(set(plain.ring) - {None}) <= cap


def test_without_discards_it_is_exactly_the_last_cap_keys() -> None:
    recent = RecentKeys(1000)
    for i in range(25_000):
        recent.add(f"call-{i}")
    assert len(recent) == 1000
    assert all(f"call-{i}" in recent for i in range(24_000, 25_000))
    assert not any(f"call-{i}" in recent for i in range(23_000, 24_000))


def _clone(data: bytes, n: int) -> bytes:
    return data.replace(b"aftercall-lab-", f"c{n}-aftercall-lab-".encode())


def test_a_tracker_fed_new_calls_holds_no_more_objects_than_before_them() -> None:
    """Every call a new id and number (a contact centre's day, the capacity bench): once its
    bounds are reached the tracker keeps nothing per call. The dict of completed ids it
    kept (8,192 id strings by default, each alive ~164 s at 50 calls/s) held one object
    per call remembered (1,000 here)."""
    data = (AMI / "answered_caller_hangup.txt").read_bytes()
    messages = [list(iter_messages(_clone(data, n))) for n in range(40)]
    tracker = CallTracker(region="IN", remember_completed=1_000)
    caller = re.compile(r"\+?919876543210")

    def feed(n: int) -> None:
        done = 0
        for m in messages[n % len(messages)]:
            m = dict(m)  # a fresh id and caller per call, as a PBX's traffic has
            for k, v in m.items():
                if isinstance(v, str):
                    m[k] = caller.sub(f"+9197{n:08d}", v.replace("aftercall-lab-", f"{n}-"))
            done += sum(r.trigger is Trigger.CALL_COMPLETED for r in tracker.feed(m))
        assert done == 1

    for n in range(1_200):  # past the completed-call memory's bound
        feed(n)
    gc.collect()
    before = sys.getallocatedblocks()
    for n in range(1_200, 2_400):
        feed(n)
    gc.collect()
    assert tracker.in_progress() == 0
    assert sys.getallocatedblocks() - before < 300
    assert len(tracker._done) == 1_000
