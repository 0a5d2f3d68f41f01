"""Fixtures for the web layer: a real store (each test runs on a SQLite file and on a
PostgreSQL database) and the app served on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from web_helpers import MakeClient, Recorder

from agent.metrics import Metrics
from agent.store.sqlite import SqliteStore
from agent.web.app import make_app
from agent.web.deps import WebDeps, store_health


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("backend", ["sqlite"] if only else ["sqlite", "postgres"])


@pytest.fixture
async def store(backend: str, request: pytest.FixtureRequest,
                tmp_path: Path) -> AsyncIterator[SqliteStore]:
    if backend == "sqlite":
        async with SqliteStore(tmp_path / "aftercall.db") as s:
            yield s
    else:
        from agent.store.postgres import PostgresStore

        async with PostgresStore(request.getfixturevalue("pg_url")) as p:
            yield p  # type: ignore[misc]



@pytest.fixture
async def make_client(store: SqliteStore) -> AsyncIterator[MakeClient]:
    clients: list[TestClient[Any, Any]] = []

    async def make(**kw: Any) -> TestClient[Any, Any]:
        rec = kw.pop("recorder", None) or Recorder()
        kw.setdefault("health", {"store": store_health(store)})
        deps = WebDeps(store=store, metrics=kw.pop("metrics", None) or Metrics(),
                       on_receipt=kw.pop("on_receipt", rec.on_receipt),
                       on_inbound=kw.pop("on_inbound", rec.on_inbound), **kw)
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(deps), host="127.0.0.1"))
        await client.start_server()
        client.deps = deps  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()
