"""Reports from the rollups agree with the rows they summarize, on SQLite and on PostgreSQL, for
whole and cut days, one rule, one gateway and one PBX, after live changes (submits, receipts,
links, clicks, replies); on PostgreSQL before and after the changes are folded."""

from __future__ import annotations

import random
import sys
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))
from web_helpers import BASE, receipt, sent

from agent.models import InboundSms, MessageState, ReceiptState
from agent.store import report_source
from agent.store.base import MessageFilter, ReportData
from agent.store.seams import Store
from agent.store.server_reports import _REPLY_SQL, data_from_rows, fact_sql
from agent.store.packing import micros
from agent.store.smslog import LINK_BY_ID, LINK_BY_REF, where
from agent.store.stamps import ts

END = datetime(2026, 3, 31, 15, 20, tzinfo=UTC)  # Berlin's DST change is inside the data


async def _traffic(store: Store, n: int = 120) -> None:
    rnd = random.Random(5)
    for i in range(n):
        at = END - timedelta(minutes=rnd.randrange(0, 6 * 24 * 60))
        d = replace(BASE, call_id=f"c{i}", number=f"+9198100{i:05d}",
                    rule=rnd.choice(["support-followup", "missed-call-sorry"]),
                    gateway=rnd.choice(["smsc", "backup"]), pbx=rnd.choice(["blr", "del"]),
                    call_ended_at=at)
        fate = rnd.random()
        if fate < 0.15:
            await store.insert_message(d, state=MessageState.SUPPRESSED, now=at,
                                       reason=rnd.choice(["opt_out", "dnd"]))
            continue
        mid = await sent(store, d, at, h2s_ms=rnd.choice([12.0, 30.0, 31.0, 250.0, 1800.0]))
        if fate < 0.85:
            state = ReceiptState.DELIVERED if fate < 0.7 else ReceiptState.UNDELIVERED
            await receipt(store, mid, d.gateway, state, at + timedelta(seconds=rnd.choice(
                [2, 3, 9, 40])), err=None if state is ReceiptState.DELIVERED else "001")
        if i % 4 == 0:
            await store.add_link(f"L{i:07d}", "https://x.in/t", message_id=mid, now=at)
            for k in range(i % 3):
                await store.add_click(f"L{i:07d}", at=at + timedelta(minutes=k + 1))
        if i % 5 == 0:
            await store.add_reply(InboundSms(d.gateway, d.number, "ACMECO",
                                             "STOP" if i % 10 == 0 else "thanks, great",
                                             at + timedelta(minutes=2)),
                                  message_id=mid, sentiment=None if i % 10 == 0 else 0.7,
                                  keyword="STOP" if i % 10 == 0 else None,
                                  action="opt_out" if i % 10 == 0 else None)


def _summed(data: ReportData) -> dict[str, Any]:
    """Tallies summed by key (a rollup and the raw edges of a range come as separate rows)."""
    out: dict[str, Counter[Any]] = {"tally": Counter(), "links": Counter(), "replies": Counter(),
                                    "days": Counter()}
    for t in data.tallies:
        key = (t.rule, t.gateway, t.state, t.reason or None, t.error_code or None)
        out["tally"].update({(*key, "n"): t.count, (*key, "sent"): t.sent,
                             (*key, "seg"): t.segments})
    for lk in data.links:
        key = (lk.rule, lk.gateway, lk.delivered)
        out["links"].update({(*key, "linked"): lk.linked, (*key, "clicked"): lk.clicked,
                             (*key, "clicks"): lk.clicks})
    for r in data.replies:
        key = (r.rule, r.gateway, r.label)
        out["replies"].update({(*key, "n"): r.count, (*key, "sum"): r.rating_sum,
                               (*key, "ratings"): r.ratings, (*key, "opt_outs"): r.opt_outs})
    for d in data.days:
        out["days"].update({(d.day, d.state, "n"): d.count, (d.day, d.state, "sent"): d.sent})
    return {k: {kk: v for kk, v in c.items() if v} for k, c in out.items()}


async def _exact(reader: Any, f: MessageFilter, tz: str, backend: str) -> ReportData:
    # SQLite stores a message's times as integer microseconds (its schema 19), and its links
    # name a message by ref (its schema 24)
    sqlite = backend == "sqlite"
    w, p = where(f, stamp=micros if sqlite else ts)
    facts = fact_sql(LINK_BY_REF if sqlite else LINK_BY_ID)
    return data_from_rows(await reader.rows(f"{facts}{w}", p),
                          await reader.rows(f"{_REPLY_SQL}{w}", p), tz)


FILTERS = [
    (None, None, None, None, None, "UTC"),
    (None, None, None, None, None, "Asia/Kolkata"),
    (END - timedelta(days=3, hours=5), None, None, None, None, "Europe/Berlin"),
    (END - timedelta(days=4, hours=3), END - timedelta(days=1, minutes=7), None, None, None,
     "Asia/Kolkata"),
    (END - timedelta(hours=20), END - timedelta(hours=2), None, None, None, "UTC"),
    (None, END - timedelta(days=2), "support-followup", None, None, "UTC"),
    (END - timedelta(days=5), None, None, "backup", None, "America/New_York"),
    (None, None, None, None, "del", "Asia/Kolkata"),
    (END - timedelta(days=2, hours=7), None, "missed-call-sorry", None, "blr", "UTC"),
]


@pytest.mark.parametrize("since, until, rule, gateway, pbx, tz", FILTERS)
async def test_reports_from_rollups_equal_the_rows(
        store: Store, backend: str, since: datetime | None, until: datetime | None,
        rule: str | None, gateway: str | None, pbx: str | None, tz: str) -> None:
    await _traffic(store)
    f = MessageFilter(since=since, until=until, rule=rule, gateway=gateway, pbx=pbx, limit=None)
    async with report_source(store) as reader:
        exact = await _exact(reader, f, tz, backend)
        assert exact.tallies  # the filter selects something
        rounds = ["changes not folded", "folded"] if backend == "postgres" else ["live"]
        for when in rounds:
            if when == "folded":
                assert await store.fold_reports() > 0  # type: ignore[attr-defined]
                assert await store.fold_reports() == 0  # type: ignore[attr-defined]
            got = await reader.report_data(f, tz)
            assert _summed(got) == _summed(exact), when
            # Percentiles come from ~5%-wide buckets: the mean of the bucket holding the
            # nearest-rank value (these values repeat, so mostly exact).
            want = {(p.scope, p.key, p.metric, p.q): p.value for p in exact.percentiles}
            have = {(p.scope, p.key, p.metric, p.q): p.value for p in got.percentiles}
            assert have.keys() == want.keys(), when
            for k, v in want.items():
                assert have[k] == pytest.approx(v, rel=0.05), (when, k)


async def test_postgres_reports_read_the_rollups_not_the_rows(
        store: Store, backend: str) -> None:
    """Once folded, a whole day's figures stand without its rows (were the report reading the
    rows, deleting them would empty it)."""
    if backend != "postgres":
        pytest.skip("SQLite's rollups are proven by tests/store/test_report_rollups.py")
    await _traffic(store, n=40)
    f = MessageFilter(until=END.replace(hour=0, minute=0), limit=None)
    async with report_source(store) as reader:
        before = await reader.report_data(f, "UTC")
        await store.fold_reports()  # type: ignore[attr-defined]
        await store._read("DELETE FROM messages")  # type: ignore[attr-defined]
        after = await reader.report_data(f, "UTC")
    assert sum(t.count for t in before.tallies) > 0
    assert _summed(after)["tally"] == _summed(before)["tally"]


async def test_postgres_agents_keep_folding_one_at_a_time(store: Store, backend: str,
                                                          open_store: Any) -> None:
    """Two agents' fold tasks on one database: the changes reach the rollups, none twice."""
    if backend != "postgres":
        pytest.skip("SQLite's triggers write the rollups directly")
    import asyncio

    await _traffic(store, n=30)
    async with report_source(store) as reader:
        want = _summed(await reader.report_data(MessageFilter(limit=None), "UTC"))
        async with open_store() as other:
            tasks = [asyncio.create_task(s.keep_folding(every=0.01)) for s in (store, other)]
            try:
                async def folded() -> None:
                    while (await store._read("SELECT count(*) FROM report_changes"))[0][0]:
                        await asyncio.sleep(0.01)

                await asyncio.wait_for(folded(), 10)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        assert _summed(await reader.report_data(MessageFilter(limit=None), "UTC")) == want
