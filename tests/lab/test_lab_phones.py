"""The lab's agent phones leave nothing behind in the process that starts and stops them:
lab tests start them once per test or module, hundreds of times in a run."""

from __future__ import annotations

import contextlib
import os

import pytest

from agent.lab import ports, sipp

pytestmark = pytest.mark.lab


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_starting_and_stopping_the_phones_leaves_no_descriptor_or_port_reserved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Exactly as many free blocks as there are phones: a second start needs all of them back.
    with contextlib.ExitStack() as held:
        blocks = [held.enter_context(ports.PORTS.block()) for _ in sipp.LAB_PHONES]
    monkeypatch.setattr(ports, "PORTS", ports.PortAllocator(starts=blocks))
    before = _open_fds()
    for _ in range(2):
        with sipp.AgentPhones():
            pass
    assert _open_fds() - before == set()
