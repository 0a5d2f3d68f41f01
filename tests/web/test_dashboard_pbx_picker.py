"""The dashboard's PBX picker in headless Chromium: shown when the database holds more than one
PBX's calls, it narrows the cards, the charts and the SMS log to one PBX; the calls view's PBX
field offers the same names."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_dashboard_browser import browser, open_page  # noqa: F401 - fixtures
from web_helpers import BASE, sent

from agent.models import CallRecord, MessageState
from agent.store.sqlite import SqliteStore

NOW = datetime.now(UTC).replace(microsecond=0)


async def _two_pbxes(store: SqliteStore) -> dict[str, set[str]]:
    """blr: three texts sent; del: one sent, two suppressed; mum: a call that texted nobody."""
    ids: dict[str, set[str]] = {"blr": set(), "del": set()}
    for i in range(3):
        d = replace(BASE, call_id=f"blr-1.{i}", number=f"+91981000010{i}", pbx="blr",
                    call_ended_at=NOW - timedelta(hours=i + 1))
        ids["blr"].add(await sent(store, d, NOW - timedelta(hours=i + 1)))
    d = replace(BASE, call_id="del-1.0", number="+919810000200", pbx="del",
                call_ended_at=NOW - timedelta(hours=2))
    ids["del"].add(await sent(store, d, NOW - timedelta(hours=2)))
    for i in (1, 2):
        row, _ = await store.insert_message(
            replace(BASE, call_id=f"del-1.{i}", number=f"+91981000020{i}", pbx="del"),
            state=MessageState.SUPPRESSED, now=NOW - timedelta(hours=3), reason="opt_out")
        ids["del"].add(row.id)
    await store.save_call(CallRecord(call_id="mum-1.0", ended_at=NOW, pbx="mum"))
    return ids


async def pick(page: Any, pbx: str) -> None:
    await page.eval("{ document.body.dataset.loaded = '';"
                    " const s = document.getElementById('f-pbx');"
                    f" s.value = '{pbx}'; s.dispatchEvent(new Event('change')) }}")
    await page.until("document.body.dataset.loaded === '1'")


async def test_pbx_picker_narrows_the_overview_to_one_pbx(tmp_path: Path, open_page: Any) -> None:
    async with SqliteStore(tmp_path / "aftercall.db") as store:
        ids = await _two_pbxes(store)
        page = await open_page(store)
        await page.goto("/")
        await page.until("document.body.dataset.loaded === '1'")
        await page.until("!document.getElementById('f-pbx-label').hidden")
        options = await page.eval(
            "[...document.getElementById('f-pbx').options].map(o => o.value)")
        assert options == ["", "blr", "del", "mum"]
        rows = "[...document.querySelectorAll('#log tbody tr')].map(r => r.dataset.id)"
        assert set(await page.eval(rows)) == ids["blr"] | ids["del"]
        card = "document.querySelector('[data-card=\"{}\"] .value').textContent"
        assert await page.eval(card.format("Sent")) == "4"

        await pick(page, "del")
        assert set(await page.eval(rows)) == ids["del"]
        assert await page.eval(card.format("Sent")) == "1"
        assert await page.eval(card.format("Suppressed")) == "2"
        await page.screenshot("dashboard-pbx.png")

        await pick(page, "blr")
        assert set(await page.eval(rows)) == ids["blr"]
        assert await page.eval(card.format("Sent")) == "3"
        # The calls view's PBX field suggests the same names.
        assert await page.eval(
            "[...document.querySelectorAll('#pbx-names option')].map(o => o.value)"
        ) == ["blr", "del", "mum"]


async def test_one_pbx_shows_no_picker(tmp_path: Path, open_page: Any) -> None:
    async with SqliteStore(tmp_path / "aftercall.db") as store:
        await sent(store, replace(BASE, call_ended_at=NOW), NOW)
        page = await open_page(store)
        await page.goto("/")
        await page.until("document.body.dataset.loaded === '1'")
        assert await page.eval("document.getElementById('f-pbx-label').hidden") is True
        assert await page.eval(
            "getComputedStyle(document.getElementById('f-pbx-label')).display") == "none"
