"""Retention on a real SQLite file: old details go, rows in flight never do, aggregates survive,
and the file gives the space back."""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))
from web_helpers import BASE, receipt, sent

from agent import retention
from agent.models import CallRecord, Disposition, InboundSms, MessageState, ReceiptState
from agent.reports import build_report
from agent.store.packing import id_key, id_sql
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.synth import generate

_HISTORY_OF = ("SELECT count(*) FROM message_history WHERE msg ="
               " (SELECT ref FROM messages WHERE id = ?)")
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=200)
RECENT = NOW - timedelta(days=3)


def _q(path: Path, sql: str, *mids: str) -> list[tuple[object, ...]]:
    """``sql``'s rows, its parameters message ids (bound as the file stores them)."""
    with sqlite3.connect(path) as c:
        return c.execute(sql, [id_key(m) for m in mids]).fetchall()


async def _seed(store: SqliteStore) -> dict[str, str]:
    ids: dict[str, str] = {}
    for i, at in enumerate((OLD, OLD + timedelta(hours=1), RECENT)):
        d = replace(BASE, call_id=f"c{i}", number=f"+91981234500{i}", call_ended_at=at)
        await store.save_call(CallRecord(call_id=f"c{i}", caller=d.number or "",
                                         disposition=Disposition.ANSWERED, ended_at=at), now=at)
        ids[f"done{i}"] = mid = await sent(store, d, at, h2s_ms=30.0 + i)
        await receipt(store, mid, "smsc", ReceiptState.DELIVERED, at + timedelta(seconds=4))
        await store.add_link(f"code{i}", "https://help.acme.in/t/1", message_id=mid, now=at)
        await store.add_click(f"code{i}", at=at + timedelta(minutes=1))
        await store.add_reply(InboundSms("smsc", d.number or "", "ACMECO", "Thanks a lot!",
                                         at + timedelta(minutes=2)), message_id=mid,
                              sentiment=0.6)
    # Old but still in flight: submitted without a receipt, and one the operator must judge.
    d = replace(BASE, call_id="c9", number="+919812345999", call_ended_at=OLD)
    await store.save_call(CallRecord(call_id="c9", caller="+919812345999", ended_at=OLD), now=OLD)
    ids["flying"] = await sent(store, d, OLD)
    row, _ = await store.insert_message(replace(d, rule="missed-call-sorry"),
                                        state=MessageState.AMBIGUOUS, now=OLD)
    ids["ambiguous"] = row.id
    return ids


async def test_old_details_go_in_flight_stays_and_the_report_survives(tmp_path: Path) -> None:
    path = tmp_path / "aftercall.db"
    async with SqliteStore(path) as store:
        ids = await _seed(store)
        before = (await build_report(store)).to_dict()
        done = await retention.prune(store, details_before=NOW - timedelta(days=180),
                                     rows_before=None, batch=1, pause=0)
        assert (done.details, done.messages, done.calls) == (2, 0, 2)
        after = (await build_report(store)).to_dict()
        # Aggregates survive: every figure, CTR, latency percentiles and replies included.
        assert after == before
        assert after["total"]["ctr"] == 1.0 and after["total"]["replies"] == 3

        old = [ids["done0"], ids["done1"]]
        for mid in old:
            m = _q(path, "SELECT text, number, detail, state, idem FROM messages"
                   " WHERE id = ?", mid)[0]
            assert m == (None, None, None, "delivered", None)  # the key's digest held the number
            assert _q(path, _HISTORY_OF, mid) \
                == [(0,)]
            assert _q(path, _HISTORY_OF.replace("message_history", "receipts"), mid) == [(0,)]
            assert _q(path, "SELECT text, number FROM replies WHERE message_id = ?", mid) \
                == [("", "")]
        assert _q(path, "SELECT call_id FROM calls ORDER BY call_id") == [("c2",), ("c9",)]
        # In flight (old as they are) and recent rows keep everything.
        for key in ("flying", "ambiguous", "done2"):
            text, number = _q(path, "SELECT text, number FROM messages WHERE id = ?", ids[key])[0]
            assert text and number
            assert _q(path, _HISTORY_OF,
                      ids[key])[0][0] >= 1
        assert await store.get_call("c9", pbx="default") is not None

        # The second horizon removes the old final rows themselves; in flight still stays.
        done = await retention.prune(store, details_before=NOW - timedelta(days=180),
                                     rows_before=NOW - timedelta(days=100), batch=1, pause=0)
        assert done.messages == 2
        left = {r[0] for r in _q(path, f"SELECT {id_sql('id')} FROM messages")}
        assert left == {ids["flying"], ids["ambiguous"], ids["done2"]}
        assert _q(path, "SELECT count(*) FROM links") == [(1,)]
        assert _q(path, "SELECT count(*) FROM clicks") == [(1,)]
        # Nothing is left to do: a further pass removes nothing.
        again = await retention.prune(store, details_before=NOW - timedelta(days=180),
                                      rows_before=NOW - timedelta(days=100), batch=10, pause=0)
        assert again.total == 0


async def test_dry_run_counts_and_prune_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "year.db"
    generate(path, messages=6000, days=365, end=NOW, seed=3)
    async with SqliteStore(path) as store:
        space0 = await store.space()
        counts = await store.count_prunable(details_before=NOW - timedelta(days=180),
                                            rows_before=None)
        assert 2900 < counts.details < 3100  # 185 of 365 days, minus ~1% still in flight
        assert (await store.space())["bytes"] == space0["bytes"]  # a dry run changes nothing
        done = await retention.prune(store, details_before=NOW - timedelta(days=180),
                                     rows_before=None, batch=500, pause=0)
        assert done.details == counts.details
        space1 = await store.space()
    assert space1["messages"] == space0["messages"]
    assert space1["bytes"] < 0.85 * space0["bytes"]  # whole pages of history and receipts
    assert path.stat().st_size == space1["bytes"]


def test_candidate_calls_find_their_messages_by_call_id(tmp_path: Path) -> None:
    """Finding calls to prune looks up each call's messages by call id: through the PBX's
    index it walked every message of the PBX per call (14 s a batch at 50,000 messages)."""
    from agent.store.sqlite import retention as sqlite_retention

    path = tmp_path / "plan.db"
    generate(path, messages=200, days=10, end=NOW, seed=3)
    conn = sqlite3.connect(path)
    try:
        for sql in (sqlite_retention._CALL_IDS,
                    "SELECT rowid FROM calls WHERE rowid IN (1) AND created_at < 0 AND "
                    + sqlite_retention._NO_LIVE_MESSAGE.format(c="calls",
                                                               final=sqlite_retention._IN)):
            plan = " | ".join(r[3] for r in conn.execute(
                "EXPLAIN QUERY PLAN " + sql, (0, 1)[:sql.count("?")]))
            assert "USING INDEX messages_call (call_id=?)" in plan, plan
    finally:
        conn.close()
