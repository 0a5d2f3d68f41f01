"""Fixtures of the compose tests: a Docker engine (found, or installed and started privately),
and the order that keeps the compose stack and the lab (same ports) from overlapping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from compose_stack import FIGURES, LAB_AT_SESSION_START, load_engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compose: builds and runs docker/compose.yaml (also marked lab: same ports)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The stack and the lab share 127.0.0.1's ports. Running the stack after every other test
    # means no lab-using module is half-way through (their phones are module fixtures); the stack
    # fixture stops a running lab first, and starts it again after if it ran before the session.
    items.sort(key=lambda item: item.get_closest_marker("compose") is not None)
    # No test has run yet: this is the lab as the session found it (sessionstart is too early
    # for a conftest below the rootdir's).
    from agent.lab.lab import Lab

    LAB_AT_SESSION_START["running"] = Lab().running()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    with load_engine().engine() as eng:
        yield eng
        t0 = time.monotonic()
    if eng.private:
        FIGURES["private engine stop"] = f"{time.monotonic() - t0:.1f}s"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("docker compose figures")
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key}: {value}")
