"""Shared fixtures. The lab (real Asterisk + SIPp phones) is started once per session when a
test asks for it, and stopped at the end if this session started it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    from agent.lab.lab import Lab

    lab = Lab()
    was_running = lab.running()
    lab.up()
    yield lab
    if not was_running:
        lab.down()


@pytest.fixture(scope="module")
def phones(lab: object) -> Iterator[object]:
    from agent.lab.sipp import AgentPhones

    with AgentPhones(agent_hangup_ms=2000) as p:
        yield p


@pytest.fixture
def ami_secret(lab: object) -> str:
    return lab.secret()  # type: ignore[attr-defined]
