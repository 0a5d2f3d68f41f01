"""Schemas 15, 16 and 17 (a message's idempotency key as a 64-bit digest, no updated_at, an
index of the rarer states only; a receipt's times as integers; a message's queued, expiry and
call end times as integers): a version 14 file with messages in every state and every column set
upgrades keeping every message (each column read back as stored), each key as the digest of the
one it had (so a replayed decision is still refused), every receipt with its times, and the
reports and SMS log pages (with each receipt's time) unchanged."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from agent.models import MessageState
from agent.store.base import MessageRow, ReceiptRow, message_from_row
from agent.store.packing import id_sql, key_digest, micros
from agent.store.sqlite import SqliteStore
from agent.store.sqlite import messages as sqlite_messages
from agent.store.sqlite.synth import migrate
from agent.store.stamps import from_ts
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows, _v12_file
from tests.store.upgrades import as_read_since_15


def _v14_file(path: Path, make_decision: MakeDecision) -> dict[str, str]:
    """A version 14 file: the schema 13 test's rows (every state, every column), a row the agent
    wrote for a decision, and one retention pruned. Returns the rows' keys by id."""
    _v12_file(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 12, 14)
        d = make_decision(call_id="agent-1", pbx="blr")
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO messages (id, idempotency_key, call_id, rule, trigger, recipient_kind,"
            " number, template, gateway, sender_id, text, encoding, segments, category, state,"
            " created_at, queued_at, updated_at, pbx) VALUES ('agent1', ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, 'queued', ?, ?, ?, 'blr')",
            (d.idempotency_key, d.call_id, d.rule, d.trigger.value, d.recipient.value, d.number,
             d.template, d.gateway, d.sender_id, d.text, d.encoding, d.segments, d.category,
             "2026-11-29T10:00:00.000000Z", "2026-11-29T10:00:00.000000Z",
             "2026-11-29T10:00:00.000000Z"))
        conn.execute("UPDATE messages SET text = NULL, number = NULL, detail = NULL,"
                     " idempotency_key = 'pruned:' || id WHERE id = 'st2'")
        # Receipts without a done date: one of the agent's row, one that matched nothing.
        conn.execute("INSERT INTO receipts (msg, smsc_id, gateway, state, received_at)"
                     " SELECT ref, 'a1', 'smsc', 'accepted', '2026-11-29T10:00:00.123456Z'"
                     " FROM messages WHERE id = 'agent1'")
        conn.execute("INSERT INTO receipts (msg, smsc_id, gateway, state, error_code,"
                     " received_at, raw) VALUES (NULL, 'lost-1', 'backup', 'undelivered', '009',"
                     " '2026-11-29T23:59:59.999999Z', 'id:lost-1 stat:UNDELIV err:009')")
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 14
        return dict(conn.execute("SELECT id, idempotency_key FROM messages").fetchall())


def _as_stored_v14(path: Path) -> tuple[dict[str, MessageRow], dict[str | None, list[ReceiptRow]]]:
    messages = {r["id"]: message_from_row(r, tuple(json.loads(r["smsc_ids"])), from_ts)
                for r in _rows(path, "SELECT * FROM messages")}
    receipts: dict[str | None, list[ReceiptRow]] = {}
    for r in _rows(path, "SELECT r.*, m.id AS message_id FROM receipts r"
                         " LEFT JOIN messages m ON m.ref = r.msg ORDER BY r.id"):
        receipts.setdefault(r["message_id"], []).append(ReceiptRow(
            r["id"], r["message_id"], r["gateway"], r["smsc_id"], r["state"], r["error_code"],
            from_ts(r["done_at"]), from_ts(r["received_at"]), r["raw"] or ""))
    return messages, receipts


async def test_version_14_file_upgrades_keeping_every_message(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v14.db"
    keys = _v14_file(path, make_decision)
    messages, receipts = _as_stored_v14(path)
    assert len(messages) > 1500 and {m.state for m in messages.values()} == set(MessageState)
    assert sum(map(len, receipts.values())) > 1000
    assert any(r.done_at is None for rs in receipts.values() for r in rs)
    assert any(r.done_at is not None for rs in receipts.values() for r in rs)
    reports_before = await _reports(path)

    async with SqliteStore(path) as store:
        for mid, want in messages.items():
            pruned = keys[mid].startswith("pruned:")
            assert await store.get_message(mid) == as_read_since_15(want, pruned=pruned), mid
            assert await store.receipts(message_id=mid) == receipts.get(mid, []), mid
        assert await store.receipts(unmatched=True) == receipts.get(None, [])
    assert await _reports(path) == reports_before
    # Each receipt's times are the microseconds its text said (the done date kept as how long
    # before it was received since schema 22).
    for rs in receipts.values():
        for r in rs:
            stored = _rows(path, "SELECT received_at - done_off, received_at FROM receipts"
                                 f" WHERE id = {r.id}")
            assert tuple(stored[0]) == (None if r.done_at is None else micros(r.done_at),
                                        micros(r.received_at)), r.id
    # Each stored digest is the digest of the key the row had (none for a pruned row).
    idem = dict(_rows(path, f"SELECT {id_sql('id')}, idem FROM messages"))
    for mid, key in keys.items():
        assert idem[mid] == (None if key.startswith("pruned:") else key_digest(key)), mid
    # Schema 17's three times are integers in every row that has them.
    assert {tuple(r) for r in _rows(path, "SELECT DISTINCT typeof(queued_at),"
                                          " typeof(expires_at), typeof(call_ended_at)"
                                          " FROM messages")} <= {
        (a, b, c) for a in ("integer", "null") for b in ("integer", "null")
        for c in ("integer", "null")}
    columns = {r["name"] for r in _rows(path, "PRAGMA table_info(messages)")}
    assert {"idem"} <= columns and not columns & {"idempotency_key", "updated_at"}
    indexes = {r["name"] for r in _rows(path, "PRAGMA index_list(messages)")}
    assert "messages_rare_state" in indexes
    assert not indexes & {"messages_submitted", "messages_state_created"}
    async with SqliteStore(path) as store:
        # The agent's row keeps its key: the same decision again is the same row, not a text.
        again, new = await store.insert_message(make_decision(call_id="agent-1", pbx="blr"),
                                                state=MessageState.QUEUED, now=END)
        assert (again.id, new) == ("agent1", False)
        other, new = await store.insert_message(make_decision(call_id="agent-2", pbx="blr"),
                                                state=MessageState.QUEUED, now=END)
        assert new and other.id != "agent1"


async def test_two_keys_of_one_digest_are_two_messages(
        tmp_path: Path, make_decision: MakeDecision, monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest is 64 bits: when two keys share one, the second takes the next free value, and a
    replay of either finds its own row."""
    monkeypatch.setattr(sqlite_messages, "key_digest", lambda key: 2**63 - 2)
    t = END + timedelta(minutes=1)
    async with SqliteStore(tmp_path / "d.db") as store:
        rows = [await store.insert_message(make_decision(call_id=f"c{i}"),
                                           state=MessageState.QUEUED, now=t) for i in range(3)]
        assert all(new for _, new in rows) and len({r.id for r, _ in rows}) == 3
        for i, (row, _) in enumerate(rows):
            again, new = await store.insert_message(make_decision(call_id=f"c{i}"),
                                                    state=MessageState.QUEUED, now=t)
            assert (again.id, new) == (row.id, False)
            assert again.idempotency_key == make_decision(call_id=f"c{i}").idempotency_key
    # The third wrapped around past the largest 64-bit value.
    assert sorted(r[0] for r in _rows(tmp_path / "d.db", "SELECT idem FROM messages")) == [
        -(2**63), 2**63 - 2, 2**63 - 1]
