"""Schema 13 and later (a year of messages in fewer bytes): a version 12 file with representative
rows upgrades keeping every message, history row, receipt, segment id and link, each read back
through the store as it was stored, and the reports and the SMS log give the same figures."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.models import MessageState
from agent.reports import build_report
from agent.store.base import MessageEvent, MessageFilter, MessageRow, ReceiptRow, message_from_row
from agent.store.migrations import LATEST_VERSION
from agent.store.packing import STATES, from_micros, id_word
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.reports import ReportReader
from agent.store.sqlite.synth import generate, migrate
from agent.store.stamps import from_ts
from tests.store.upgrades import as_read_since_15, links_as_stored

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _v12_file(path: Path) -> None:
    generate(path, messages=1500, days=10, end=END, seed=13, chunk=500, upgrade=False)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 6, 12)
        conn.execute("BEGIN")
        # Messages in every state with every time column set (the generator leaves out those
        # in flight and the optional times), one with three segment ids and a receipt for each.
        for i, state in enumerate(MessageState):
            conn.execute(
                "INSERT INTO messages (id, idempotency_key, call_id, rule, trigger,"
                " recipient_kind, number, template, gateway, sender_id, text, encoding, segments,"
                " category, dlt_template_id, dlt_entity_id, state, reason, detail, attempts,"
                " smsc_ids, error_code, created_at, queued_at, submitted_at, final_at,"
                " next_attempt_at, submitting_since, expires_at, call_ended_at,"
                " hangup_to_submit_ms, updated_at, pbx)"
                " SELECT 'st' || ?1, 'st-key' || ?1, call_id, rule, trigger, recipient_kind,"
                " number, template, gateway, sender_id, text, 'UCS-2', 3, 'promotional',"
                " 'dlt-t', 'dlt-e', ?2, 'why', 'what', 2, ?3, 'E42', created_at,"
                " '2026-11-29T10:00:00.000001Z', '2026-11-29T10:00:01.250000Z',"
                " '2026-11-29T10:00:09.999999Z', '2026-11-29T10:05:00.000000Z',"
                " '2026-11-29T10:00:00.500000Z', '2026-11-30T10:00:00.000000Z',"
                " '2026-11-29T09:59:59.000000Z', 1250.5, '2026-11-29T10:00:09.999999Z', 'pbx-b'"
                " FROM messages WHERE state = 'delivered' LIMIT 1",
                (i, state.value, f'["st{i}a","st{i}b","st{i}c"]'))
            for j, part in enumerate("abc"):
                conn.execute("INSERT INTO message_smsc_ids (gateway, smsc_id, message_id)"
                             " VALUES ('smsc', ?, ?)", (f"st{i}{part}", f"st{i}"))
                conn.execute(
                    "INSERT INTO receipts (message_id, smsc_id, gateway, state, error_code,"
                    " done_at, received_at) VALUES (?, ?, 'smsc', 'delivered', NULL,"
                    " '2026-11-29T10:00:08.000000Z', ?)",
                    (f"st{i}", f"st{i}{part}", f"2026-11-29T10:00:0{j}.000000Z"))
            conn.execute(
                "INSERT INTO message_history (message_id, seq, at, state, reason, detail)"
                " VALUES (?, 1, 1796032800000001, ?, 'why', 'what')", (f"st{i}", i))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 12


def _rows(path: Path, sql: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(path)) as c:
        c.row_factory = sqlite3.Row
        return c.execute(sql).fetchall()


def _as_stored_v12(path: Path) -> tuple[dict[str, MessageRow], dict[str, list[MessageEvent]],
                                       dict[str, list[ReceiptRow]], list[tuple[str, str, str]]]:
    """Every message, its history and receipts as the version 12 file holds them, decoded as
    version 12 did (times: fixed-width text; history: integer microseconds and state codes)."""
    messages = {r["id"]: message_from_row(r, tuple(json.loads(r["smsc_ids"])),
                                          from_ts)
                for r in _rows(path, "SELECT * FROM messages")}
    events: dict[str, list[MessageEvent]] = {}
    for r in _rows(path, "SELECT * FROM message_history ORDER BY message_id, seq"):
        events.setdefault(r["message_id"], []).append(MessageEvent(
            r["message_id"], from_micros(r["at"]), STATES[r["state"]], r["reason"], r["detail"]))
    receipts: dict[str, list[ReceiptRow]] = {}
    for r in _rows(path, "SELECT * FROM receipts ORDER BY id"):
        receipts.setdefault(r["message_id"], []).append(ReceiptRow(
            r["id"], r["message_id"], r["gateway"], r["smsc_id"], r["state"], r["error_code"],
            from_ts(r["done_at"]), from_ts(r["received_at"]), r["raw"] or ""))
    segments = [tuple(r) for r in _rows(
        path, "SELECT gateway, smsc_id, message_id FROM message_smsc_ids")]
    return messages, events, receipts, segments


async def _reports(path: Path) -> tuple[dict[str, object], ...]:
    async with ReportReader(path) as reader:  # read-only: the file keeps its version
        out = [(await build_report(reader)).to_dict()]
        for since in (None, END - timedelta(days=2)):
            f = MessageFilter(since=since, limit=50)
            out.append({"page": await reader.log_page(f, unmasked=True),
                        "failed": await reader.log_page(
                            MessageFilter(states=(MessageState.FAILED,), limit=50),
                            unmasked=True),
                        "count": await reader.log_count(f, 100_000)})
        return tuple(out)


async def test_version_12_file_upgrades_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v12.db"
    _v12_file(path)
    messages, events, receipts, segments = _as_stored_v12(path)
    assert len(messages) > 1500 and sum(map(len, events.values())) > 3500
    assert sum(map(len, receipts.values())) > 1000 and len(segments) > 1000
    links = links_as_stored(path)
    replies = [tuple(r) for r in _rows(path, "SELECT * FROM replies ORDER BY id")]
    assert len(links) > 100
    reports_before = await _reports(path)

    async with SqliteStore(path) as store:
        for mid, want in messages.items():
            assert await store.get_message(mid) == as_read_since_15(want), mid
            assert await store.message_events(mid) == events.get(mid, []), mid
            assert await store.receipts(message_id=mid) == receipts.get(mid, []), mid
        unmatched = await store.receipts(unmatched=True)
        assert unmatched == receipts.get(None, [])  # type: ignore[call-overload]
        # Each segment id still finds its message (how a receipt finds what it is for).
        for gateway, smsc_id, mid in segments:
            row = await store.find_by_smsc_id(gateway, smsc_id)
            assert row is not None and row.id == mid, (gateway, smsc_id)
        for code, mid, *_ in links:
            got = await store.resolve_link(code)
            assert got is not None and got.message_id == mid
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    assert links_as_stored(path) == links
    assert [(r[0], id_word(r[1]), *r[2:])  # a message id: 16 bytes since schema 26
            for r in _rows(path, "SELECT * FROM replies ORDER BY id")] == replies
    assert await _reports(path) == reports_before


async def test_writes_after_the_upgrade_keep_history_and_segments(tmp_path: Path,
                                                                   make_decision) -> None:
    """A message written after the upgrade keeps its whole history and its segment ids, and a
    VACUUM (``aftercall prune --vacuum``) leaves them pointing at it."""
    path = tmp_path / "v12.db"
    _v12_file(path)
    t = END + timedelta(minutes=1)
    async with SqliteStore(path) as store:
        row, _ = await store.insert_message(make_decision(call_id="new-1"),
                                            state=MessageState.QUEUED, now=t)
        await store.claim_for_submit(row.id, now=t)
        await store.record_submit(row.id, gateway="smsc", smsc_ids=["n1", "n2"], now=t,
                                  hangup_to_submit_ms=3.0)
    with closing(sqlite3.connect(path)) as c:
        # 200 older messages go (never the new one): the VACUUM then renumbers rowids around it.
        c.execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE id != ?"
                  " ORDER BY ref LIMIT 200)", (row.id,))
        c.commit()
        c.execute("VACUUM")
    async with SqliteStore(path) as store:
        assert [e.state for e in await store.message_events(row.id)] == [
            MessageState.QUEUED, MessageState.QUEUED, MessageState.SUBMITTED]
        for sid in ("n1", "n2"):
            got = await store.find_by_smsc_id("smsc", sid)
            assert got is not None and got.id == row.id
