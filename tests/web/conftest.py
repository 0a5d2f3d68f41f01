"""Fixtures for the web layer: a real SQLite store and the app served on a loopback port."""

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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "aftercall.db") as s:
        yield s



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
