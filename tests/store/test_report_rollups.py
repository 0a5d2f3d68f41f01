"""The report's daily rollups agree with the rows they summarize, for any range, after changes."""

from __future__ import annotations

import math
import sqlite3
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))
from web_helpers import BASE, receipt, sent, seed

from agent.models import InboundSms, ReceiptState
from agent.reports import compute_report
from agent.store.base import MessageFilter
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.reports import report_data
from agent.store.sqlite.synth import generate

END = datetime(2026, 4, 2, 15, 20, tzinfo=UTC)  # the data spans Berlin's DST change


def _from_rows(conn: sqlite3.Connection, f: MessageFilter, tz: str) -> ReportData:
    # Every message here is the default PBX's; the rollups have no PBX, so this reads the rows.
    return report_data(conn, replace(f, pbx="default"), tz)


def _exact(conn: sqlite3.Connection, q: int) -> float:
    xs = sorted(r[0] for r in conn.execute(
        "SELECT hangup_to_submit_ms FROM messages WHERE hangup_to_submit_ms IS NOT NULL"))
    return xs[max(1, math.ceil(q / 100 * len(xs))) - 1]


@pytest.mark.parametrize("since, until, rule, gateway, tz", [
    (None, None, None, None, "UTC"),
    (None, None, None, None, "Asia/Kolkata"),  # days of +05:30
    (END - timedelta(days=9, hours=5), None, None, None, "Europe/Berlin"),  # DST on 2026-03-29
    (END - timedelta(days=20, hours=3), END - timedelta(days=2, minutes=7), None, None,
     "Asia/Kolkata"),
    (END - timedelta(hours=20), END - timedelta(hours=2), None, None, "UTC"),  # inside one day
    (None, END - timedelta(days=12), "support-followup", None, "UTC"),
    (END - timedelta(days=25), None, None, "backup", "America/New_York"),
])
async def test_rollups_equal_the_rows(tmp_path: Path, since: datetime | None,
                                      until: datetime | None, rule: str | None,
                                      gateway: str | None, tz: str) -> None:
    path = tmp_path / "a.db"
    generate(path, messages=4000, days=30, end=END, seed=7)
    async with SqliteStore(path) as store:
        # Live changes after the bulk load: a new day's messages, receipts, links, clicks, replies.
        await seed(store)
        mid = await sent(store, replace(BASE, call_id="late.1", call_ended_at=END), END)
        await store.add_link("late1", "https://x.in/1", message_id=mid, now=END)
        await store.add_click("late1", at=END)
        await receipt(store, mid, "smsc", ReceiptState.DELIVERED, END + timedelta(seconds=3))
        await store.add_reply(InboundSms("smsc", "+919812345678", "ACMECO", "STOP", END),
                              message_id=mid, keyword="STOP", action="opt_out")
    f = MessageFilter(since=since, until=until, rule=rule, gateway=gateway, limit=None)
    with sqlite3.connect(path) as conn:
        fast = compute_report(report_data(conn, f, tz), since=since, until=until,
                              timezone=tz).to_dict()
        slow = compute_report(_from_rows(conn, f, tz), since=since, until=until,
                              timezone=tz).to_dict()
        assert _same(fast, slow)
        if since is until is rule is gateway is None:
            # Percentiles from the histograms are within one bucket (~5%) of the exact ones.
            for q, key in ((50, "hangup_to_submit_p50_ms"), (99, "hangup_to_submit_p99_ms")):
                assert fast["total"][key] == pytest.approx(_exact(conn, q), rel=0.05)
            assert fast["total"]["ctr"] is not None and fast["total"]["opt_outs"] > 0


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys()
        return all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b)
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9)
        return True
    assert a == b
    return True
