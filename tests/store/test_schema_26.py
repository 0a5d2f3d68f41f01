"""Schema 26 (a message id the agent made, 32 lowercase hex digits, stored as its 16 bytes; any
other id as its text): a version 25 file holding both kinds, ids that only look like the agent's
(upper case, 31 digits, not hex) and replies to both, upgrades keeping every message, the SMS
log (its order among messages of one time too), reports, rollups, links, receipts and replies
as they read; the ids and the unique index take half the bytes; a message made after is stored
as bytes and every path that names it by id (claim, submit, receipts by segment id and by our id,
replies, links, history, retention) finds it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from agent import retention
from agent.models import InboundSms, MessageState, Receipt, ReceiptState
from agent.store.base import MessageFilter, MessageRow
from agent.store.migrations import _V15_COLUMNS, LATEST_VERSION
from agent.store.packing import id_key, id_sql, id_word
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.reports import ReportReader
from agent.store.sqlite.rows import _message
from agent.store.sqlite.synth import migrate
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows
from tests.store.test_schema_24 import _ROLLUPS
from tests.store.test_schema_25 import _v24_file
from tests.store.upgrades import links_as_stored, rolled_and_exact

VERSION = 26
# Ids the agent never makes, each kept as text: upper case, one digit short, not hex, and one
# that sorts after the agent's in text but would sort before them as stored (text before bytes).
_ODD = ("ABCDEF0123456789ABCDEF0123456789", "0123456789abcdef0123456789abcde",
        "zz" + "0" * 30)


def _v25_file(path: Path, make_decision: MakeDecision) -> str:
    """A version 25 file (tests/store/test_schema_25.py's) with _ODD's messages and replies to
    one of them and to none; returns the agent-made id that ``_ODD[2]`` shares its time with."""
    _v24_file(path, make_decision)
    rest = _V15_COLUMNS.removeprefix("id, ")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 24, VERSION - 1)
        twin = conn.execute("SELECT id FROM messages WHERE length(id) = 32 AND id < 'a'"
                            " ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        conn.execute("BEGIN")
        conn.execute("DELETE FROM messages WHERE id = 'odd'")  # a trigger no MessageRow holds
        for n, mid in enumerate(_ODD):
            conn.execute(f"INSERT INTO messages ({_V15_COLUMNS}, idem) SELECT ?, {rest}, ?"
                         " FROM messages WHERE id = ?", (mid, 800 + n, twin))
        for mid in (_ODD[0], None):
            conn.execute("INSERT INTO replies (message_id, gateway, number, text, received_at)"
                         " VALUES (?, 'smsc', '+919800000001', 'ok', '2026-11-29T10:00:00Z')",
                         (mid,))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION - 1
    return twin


def _as_stored(path: Path) -> dict[str, MessageRow]:
    return {m.id: m for m in map(_message, _rows(path, "SELECT * FROM messages"))}


def _bytes_of(path: Path, *names: str) -> int:
    return sum(r[0] for r in _rows(path, "SELECT sum(pgsize) FROM dbstat WHERE name IN"
                                         f" ({','.join(repr(n) for n in names)})"))


async def _log(path: Path, *, newest_first: bool = True) -> list[dict[str, object]]:
    async with ReportReader(path) as reader:  # read-only: the file keeps its version
        return await reader.log_page(MessageFilter(limit=None, newest_first=newest_first),
                                     unmasked=True)


def _replies(path: Path) -> list[tuple[object, ...]]:
    return [tuple(r) for r in _rows(path, f"SELECT id, {id_sql('message_id')}, text, received_at"
                                          " FROM replies ORDER BY id")]


async def test_version_25_file_upgrades_keeping_every_message(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v25.db"
    twin = _v25_file(path, make_decision)
    before = _as_stored(path)
    assert len(before) > 1000 and set(_ODD) <= set(before)
    made = {mid for mid in before if len(mid) == 32 and id_key(mid) != mid}
    assert set(before) - made == set(_ODD) | {m for m in before if len(m) != 32}
    assert before[_ODD[2]].created_at == before[twin].created_at
    log_before, oldest_first = await _log(path), await _log(path, newest_first=False)
    ids = [r["id"] for r in log_before]
    assert ids.index(_ODD[2]) < ids.index(twin)  # newest first; then by id, as text
    reports_before, links_before, replies_before = (
        await _reports(path), links_as_stored(path), _replies(path))
    assert sum(r[1] in made for r in replies_before) > 5
    assert {_ODD[0], None} <= {r[1] for r in replies_before}
    rollups_before = {t: _rows(path, f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4") for t in _ROLLUPS}
    rolled_exact_before = await rolled_and_exact(path)
    receipts_before = {}
    ids_bytes = _bytes_of(path, "messages", "sqlite_autoindex_messages_1")
    index_bytes = _bytes_of(path, "sqlite_autoindex_messages_1")

    async with SqliteStore(path) as store:
        for mid, want in before.items():
            assert await store.get_message(mid) == want, mid
        for mid in sorted(made)[:200]:
            receipts_before[mid] = await store.receipts(message_id=mid)
            assert all(r.message_id == mid for r in receipts_before[mid])
            for sid in before[mid].smsc_ids:
                found = await store.find_by_smsc_id(before[mid].gateway, sid)
                assert found is not None and found.id == mid
        assert sum(map(len, receipts_before.values())) > 50
        replied = sorted({str(r[1]) for r in replies_before if r[1] is not None})
        assert sorted({r.message_id for r in await store.replies_to(replied)}) == replied
        for code, mid, *_ in links_before:
            link = await store.resolve_link(str(code))
            assert link is not None and link.message_id == mid
        listed = await store.list_messages(MessageFilter(limit=None))
        assert [m.id for m in listed] == [
            m.id for m in sorted(before.values(), key=lambda m: (-m.created_at.timestamp(),
                                                                 m.id))]
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    # the agent's ids are their 16 bytes; every other id is the text it was
    kinds = {id_word(r[0]): (r[1], r[2]) for r in _rows(
        path, "SELECT id, typeof(id), length(id) FROM messages")}
    assert {mid for mid, (t, n) in kinds.items() if (t, n) == ("blob", 16)} == made
    assert all(kinds[mid] == ("text", len(mid)) for mid in set(before) - made)
    assert {r[0] for r in _rows(path, "SELECT typeof(message_id) FROM replies")} == {
        "blob", "text", "null"}
    # everything reads as before: the log (in the same order), reports, rollups, links, replies
    assert await _log(path) == log_before
    assert await _log(path, newest_first=False) == oldest_first
    assert await _reports(path) == reports_before
    assert {t: _rows(path, f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4")
            for t in _ROLLUPS} == rollups_before
    assert links_as_stored(path) == links_before
    assert _replies(path) == replies_before
    assert await rolled_and_exact(path) == rolled_exact_before
    async with SqliteStore(path) as store:
        for mid, want in receipts_before.items():
            assert await store.receipts(message_id=mid) == want
    # the unique index is about half, the table smaller by the 16 bytes a row
    assert _bytes_of(path, "sqlite_autoindex_messages_1") < index_bytes * 0.7
    assert _bytes_of(path, "messages", "sqlite_autoindex_messages_1") < ids_bytes - 16 * len(made)


async def test_a_message_after_is_its_bytes_and_found_by_its_id_everywhere(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "new.db"
    t = END + timedelta(minutes=1)
    async with SqliteStore(path) as store:
        rows = []
        for i in range(3):
            d = make_decision(call_id=f"c{i}", text=f"see https://x.in/l/k{i}")
            row, created = await store.insert_message(d, state=MessageState.QUEUED, now=t)
            assert created and len(row.id) == 32 and id_key(row.id) != row.id
            again, created = await store.insert_message(d, state=MessageState.QUEUED, now=t)
            assert not created and again == row
            assert await store.get_message(row.id) == row
            rows.append(row)
        one, two, three = rows
        # claim and submit by id; a receipt by segment id, and one by our id (HTTP callback)
        claimed = await store.claim_for_submit(one.id, now=t)
        assert claimed is not None and claimed.id == one.id and claimed.attempts == 1
        sent = await store.record_submit(one.id, gateway="smsc", smsc_ids=["S1"], now=t,
                                         hangup_to_submit_ms=3.0)
        assert sent is not None and sent.state is MessageState.SUBMITTED
        await store.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                          smsc_id="S1"), now=t + timedelta(seconds=2))
        await store.claim_for_submit(two.id, now=t)
        await store.record_submit(two.id, gateway="smsc", smsc_ids=["S2"], now=t,
                                  hangup_to_submit_ms=3.0)
        await store.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.UNDELIVERED,
                                          smsc_id=None, message_id=two.id),
                                  now=t + timedelta(seconds=3))
        got = {m.id: m for m in [await store.get_message(r.id) for r in rows] if m}
        assert got[one.id].state is MessageState.DELIVERED
        assert got[two.id].state is MessageState.UNDELIVERED
        assert [r.message_id for r in await store.receipts(message_id=two.id)] == [two.id]
        assert [e.state for e in await store.message_events(one.id)][-1] is MessageState.DELIVERED
        # a transition names it by id; a link and a reply to it are found through it
        moved = await store.transition(three.id, MessageState.SUPPRESSED, now=t, reason="dnd",
                                       from_states=[MessageState.QUEUED])
        assert moved is not None and moved.id == three.id
        await store.add_link("k1", "https://acme.in/a", message_id=one.id, now=t)
        link = await store.resolve_link("k1")
        assert link is not None and link.message_id == one.id
        await store.add_click("k1", at=t + timedelta(seconds=5))
        await store.add_reply(InboundSms(gateway="smsc", sender=one.number or "",
                                         recipient="ACMECO", text="thanks",
                                         received_at=t + timedelta(minutes=1)),
                              message_id=one.id, rating=5)
        assert [r.message_id for r in await store.replies_to([one.id, two.id])] == [one.id]
        async with ReportReader(path) as reader:
            log = {r["id"]: r for r in await reader.log_page(MessageFilter(limit=None),
                                                             unmasked=True)}
        assert set(log) == {r.id for r in rows}
        assert (log[one.id]["clicks"], log[one.id]["replies"]) == (1, 1)
        # the reply's report row found its message (the trigger joins on the stored id)
        assert _rows(path, "SELECT n, ratings FROM report_replies")[0][:] == (1, 1)
        # retention finds and strips them by id
        done = await retention.prune(store, details_before=t + timedelta(days=1),
                                     rows_before=None, batch=10, pause=0)
        assert done.details == 3
        stripped = await store.get_message(one.id)
        assert stripped is not None and stripped.text is None
        assert stripped.idempotency_key == f"pruned:{one.id}"
    stored = _rows(path, "SELECT typeof(id), length(id) FROM messages")
    assert [tuple(r) for r in stored] == [("blob", 16)] * 3
    assert {r[0] for r in _rows(path, "SELECT typeof(message_id) FROM replies")} == {"blob"}
    rolled, exact = await rolled_and_exact(path)
    assert rolled == exact


def test_a_lookup_by_id_searches_the_unique_index(tmp_path: Path,
                                                  make_decision: MakeDecision) -> None:
    path = tmp_path / "v25.db"
    _v25_file(path, make_decision)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, VERSION - 1, VERSION)
        plan = " ".join(r[3] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM messages WHERE id = ?", (id_key("ab" * 16),)))
    assert "USING INDEX sqlite_autoindex_messages_1 (id=?)" in plan
