"""Fixtures of the compose tests: a Docker engine (found, or installed and started privately),
and the order that keeps the compose stack and the lab (same ports) from overlapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from compose_stack import FIGURES, load_engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compose: builds and runs docker/compose.yaml (also marked lab: same ports)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The stack and the lab share 127.0.0.1's ports. Running the stack after every other test
    # means no lab-using module is half-way through (their phones are module fixtures); the stack
    # fixture stops a running lab first and starts it again after.
    items.sort(key=lambda item: item.get_closest_marker("compose") is not None)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    with load_engine().engine() as eng:
        yield eng


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("docker compose figures")
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key}: {value}")
