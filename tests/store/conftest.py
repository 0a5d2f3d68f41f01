"""Fixtures for store and dispatcher tests: every test that asks for ``store`` (or
``open_store``) runs twice, on a real SQLite file and on a real PostgreSQL database (a fresh one
per test in the session's throwaway cluster); a Decision factory. ``@pytest.mark.sqlite_only``
keeps a test about the SQLite writer itself to SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.models import Decision, RecipientKind, Trigger
from agent.store.seams import Store
from agent.store.postgres import PostgresStore
from agent.store.sqlite import SqliteStore

MakeDecision = Callable[..., Decision]
OpenStore = Callable[..., Any]
BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("backend", ["sqlite"] if only else list(BACKENDS))

_BASE = Decision(
    call_id="1700000000.1",
    rule="support-followup",
    trigger=Trigger.CALL_COMPLETED,
    recipient=RecipientKind.CALLER,
    number="+919812345678",
    template="support_ticket",
    gateway="smsc",
    sender_id="ACMECO",
    text="Hi Asha, your ticket #42 is logged.",
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "aftercall.db"


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest, db_path: Path) -> OpenStore:
    """A new, unopened store on this test's database each call: a second agent, or the same
    agent after a restart. Keyword arguments go to the backend's constructor."""
    if backend == "sqlite":
        return lambda **kw: SqliteStore(db_path, **kw)
    url = request.getfixturevalue("pg_url")
    return lambda **kw: PostgresStore(url, **kw)


@pytest.fixture
def db_arg(backend: str, request: pytest.FixtureRequest, db_path: Path) -> str:
    """What ``--db`` names for this test's database (the CLI's view of ``store``)."""
    return str(db_path) if backend == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[Store]:
    async with open_store() as s:
        yield s


@pytest.fixture
def make_decision() -> MakeDecision:
    def make(**changes: Any) -> Decision:
        changes.setdefault("call_ended_at", datetime.now(UTC))
        return replace(_BASE, **changes)

    return make
