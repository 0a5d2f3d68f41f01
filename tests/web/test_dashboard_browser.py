"""The dashboard in headless Chromium, driven over the DevTools protocol (aiohttp websocket)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from web_helpers import seed

from agent.metrics import Metrics
from agent.store.sqlite import SqliteStore
from agent.web.app import make_app
from agent.web.deps import WebDeps

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[2] / "artifacts"
# `make test` installs Debian's chromium (Makefile APT_PACKAGES); a missing browser fails here.


class Cdp:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        await self.ws.send_json({"id": i, "method": method, "params": params})
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == i:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                return data["result"]
        raise AssertionError("DevTools connection closed")

    async def eval(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[str]:
    profile = tmp_path / "profile"
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; it is waited on below
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", "--window-size=1400,1250", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"

        async def ready() -> str:
            while not port_file.exists() or not port_file.read_text().strip():
                await asyncio.sleep(0.05)  # chromium writes this file; there is no event to await
            return port_file.read_text().split()[0]

        yield await asyncio.wait_for(ready(), 30)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_dashboard_renders_log_cards_and_charts(tmp_path: Path, browser: str) -> None:
    async with SqliteStore(tmp_path / "aftercall.db") as store:
        seeded = await seed(store)

        async def nothing(_: Any) -> None:
            return None

        deps = WebDeps(store=store, metrics=Metrics(), on_receipt=nothing, on_inbound=nothing)
        server = TestServer(make_app(deps), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.put(f"http://127.0.0.1:{browser}/json/new?about:blank") as r:
                    target = await r.json()
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    cdp = Cdp(ws)
                    await cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=1250,
                                   deviceScaleFactor=1, mobile=False)
                    await cdp.call("Page.navigate", url=str(server.make_url("/")))

                    async def loaded() -> None:
                        while await cdp.eval("document.body && document.body.dataset.loaded") != "1":
                            await asyncio.sleep(0.05)

                    await asyncio.wait_for(loaded(), 15)
                    rows = await cdp.eval(
                        "[...document.querySelectorAll('#log tbody tr')].map(r => r.dataset.id)")
                    assert sorted(rows) == sorted(seeded.ids.values())
                    statuses = await cdp.eval(
                        "[...document.querySelectorAll('#log tbody .badge')].map(b => b.textContent)")
                    assert statuses.count("delivered") == 3 and statuses.count("suppressed") == 2
                    cards = await cdp.eval(
                        "Object.fromEntries([...document.querySelectorAll('.card')].map(c =>"
                        " [c.dataset.card, c.querySelector('.value').textContent]))")
                    assert cards["Sent"] == "4" and cards["Delivery rate"] == "75.0%"
                    assert cards["CTR"] == "50.0%"
                    days = await cdp.eval(
                        "[...new Set([...document.querySelectorAll('#chart-daily rect.bar')]"
                        ".map(r => r.dataset.day))]")
                    assert days == ["2024-05-01", "2024-05-02"]
                    assert await cdp.eval("!!document.querySelector('#chart-daily .rate-line')")
                    reasons = await cdp.eval(
                        "[...document.querySelectorAll('#chart-failures rect.hbar')]"
                        ".map(r => r.dataset.label)")
                    assert set(reasons) == {"undelivered", "rejected", "opt_out", "dnd"}
                    ctr = await cdp.eval(
                        "[...document.querySelectorAll('#chart-ctr rect.hbar')]"
                        ".map(r => r.dataset.label)")
                    assert ctr == ["support-followup"]
                    # Filtering by status narrows the table.
                    await cdp.eval("document.getElementById('f-status').value = 'suppressed';"
                                   "document.body.dataset.loaded = '';"
                                   "document.querySelector('#filters button').click()")
                    await asyncio.wait_for(loaded(), 15)
                    assert await cdp.eval("document.querySelectorAll('#log tbody tr').length") == 2
                    await cdp.eval("document.getElementById('f-status').value = '';"
                                   "document.body.dataset.loaded = '';"
                                   "document.querySelector('#filters button').click()")
                    await asyncio.wait_for(loaded(), 15)
                    shot = await cdp.call("Page.captureScreenshot", format="png")
                    ARTIFACTS.mkdir(exist_ok=True)
                    (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
        finally:
            await server.close()
