"""Schema 21 (a one-part message's receipt detail is said by its row: stored as ''): a version
20 file upgrades keeping every message's detail as it read (the SMS log's too), storing ''
only where the row's gateway, state and one segment id say the very same words; a receipt
applied after says its detail as before (the message's and its history's), a multi-part
message's, a failover's (another gateway's id) and a callback's by our id are kept whole."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from agent.models import MessageState, Receipt, ReceiptState
from agent.store import report_source
from agent.store.base import MessageFilter
from agent.store.migrations import LATEST_VERSION
from agent.store.packing import id_sql
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.rows import _message
from agent.store.sqlite.synth import migrate
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows
from tests.store.test_schema_19 import _v17_file

VERSION = 21


def _v20_file(path: Path, make_decision: MakeDecision) -> None:
    _v17_file(path, make_decision)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 17, VERSION - 1)
        conn.execute("BEGIN")
        # receipts' details that the row does not say: another gateway's, another id's, a
        # state the words do not match (twice), and one of a message with two ids; and one
        # it says, of a failed message (a rejected receipt)
        for mid, state, detail, ids in (
                ("st1", "delivered", "backup receipt delivered for st1a", '["st1a"]'),
                ("st2", "delivered", "smsc receipt delivered for other", '["st2a"]'),
                ("st3", "delivered", "smsc receipt expired for st3a", '["st3a"]'),
                ("st4", "delivered", "smsc receipt delivered for st4a", '["st4a","st4b"]'),
                ("st5", "failed", "smsc receipt failed for st5a", '["st5a"]'),
                ("st6", "failed", "smsc receipt rejected for st6a", '["st6a"]')):
            conn.execute("UPDATE messages SET reason = 'receipt', detail = ?, smsc_ids = ?,"
                         " state = ?, gateway = 'smsc' WHERE id = ?", (detail, ids, state, mid))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION - 1


async def test_version_20_file_upgrades_keeping_every_detail(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v20.db"
    _v20_file(path, make_decision)
    before = {r["id"]: _message(r) for r in _rows(path, "SELECT * FROM messages")}
    said = sum(m.reason == "receipt" and m.detail is not None for m in before.values())
    assert said > 500
    reports_before = await _reports(path)

    async with SqliteStore(path) as store:
        for mid, want in before.items():
            assert await store.get_message(mid) == want, mid
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    assert await _reports(path) == reports_before
    stored = {r[0]: r[1] for r in _rows(path, f"SELECT {id_sql('id')}, detail FROM messages")}
    marked = {mid for mid, d in stored.items() if d == ""}
    # most receipts' details are said by the row; those it does not say are kept whole
    assert len(marked) > said * 0.8
    for mid in ("st1", "st2", "st3", "st4", "st5"):
        assert stored[mid] == before[mid].detail, mid
    assert stored["st6"] == ""
    for mid in marked:
        m = before[mid]
        assert m.detail == f"{m.gateway} receipt {_said(m.state)} for {m.smsc_ids[0]}", mid


def _said(state: MessageState) -> str:
    return {"delivered": "delivered", "expired": "expired", "undelivered": "undelivered",
            "failed": "rejected"}[state.value]


async def test_a_receipt_after_says_its_detail_as_before(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    t = END + timedelta(minutes=1)
    async with SqliteStore(tmp_path / "r.db") as store:
        async def sent(call: str, ids: list[str], gateway: str = "smsc") -> str:
            row, _ = await store.insert_message(make_decision(call_id=call),
                                                state=MessageState.QUEUED, now=t)
            await store.claim_for_submit(row.id, now=t)
            await store.record_submit(row.id, gateway=gateway, smsc_ids=ids, now=t,
                                      hangup_to_submit_ms=2.0)
            return row.id

        one = await sent("c1", ["A1"])
        two = await sent("c2", ["B1", "B2"])
        failed = await sent("c3", ["C1"])
        by_id = await sent("c4", ["D1"])
        for gw, sid, st, mid in (("smsc", "A1", ReceiptState.DELIVERED, None),
                                 ("smsc", "B1", ReceiptState.DELIVERED, None),
                                 ("smsc", "B2", ReceiptState.UNDELIVERED, None),
                                 ("smsc", "C1", ReceiptState.REJECTED, None),
                                 ("smsc", None, ReceiptState.EXPIRED, by_id)):
            await store.apply_receipt(Receipt(gateway=gw, state=st, smsc_id=sid,
                                              message_id=mid), now=t)
        want = {one: "smsc receipt delivered for A1",
                two: "smsc receipts: 1 of 2 parts delivered",
                failed: "smsc receipt rejected for C1",
                by_id: f"smsc receipt expired for {by_id}"}
        for mid, detail in want.items():
            m = await store.get_message(mid)
            assert m is not None and m.detail == detail, mid
            assert (await store.message_events(mid))[-1].detail == detail, mid
        async with report_source(store) as reader:
            page = {r["id"]: r for r in await reader.log_page(MessageFilter(limit=10),
                                                               unmasked=True)}
        assert page[failed]["detail"] == "smsc receipt rejected for C1"
        assert page[one]["detail"] is None  # delivered: the log shows none, as before
    stored = dict(_rows(tmp_path / "r.db", f"SELECT {id_sql('id')}, detail FROM messages"))
    assert stored[one] == stored[failed] == ""
    assert stored[two] == want[two] and stored[by_id] == want[by_id]
