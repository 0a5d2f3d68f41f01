"""Schema 22 (a receipt's state as a code, its done date as how long before it was received): a
version 21 file with receipts in every state, matched and unmatched, with and without their raw
text, error code and done date (the same as, before and after their receipt) upgrades keeping
every receipt as the store, the SMS log and the reports read it, and a resent one is still known
as a repeat."""

from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from agent.models import Receipt, ReceiptState
from agent.store.base import MessageFilter, ReceiptRow
from agent.store.packing import from_micros, micros
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.reports import ReportReader
from agent.store.sqlite.synth import migrate
from tests.store.test_schema_13 import END, _reports, _rows, _v12_file

_DONE = (None, timedelta(0), timedelta(seconds=-41, microseconds=-7), timedelta(seconds=3))


def _v21_file(path: Path) -> None:
    """The schema 13 test's rows, and receipts of every state for the newest messages and
    unmatched, each with or without error code, raw text and done date."""
    _v12_file(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 12, 21)
        refs = [r[0] for r in conn.execute(
            "SELECT ref FROM messages ORDER BY created_at DESC LIMIT 40")]
        conn.execute("BEGIN")
        at = micros(END)
        combos = itertools.product(ReceiptState, (None, "000", "0x45"), ("", "id:x stat:Y"),
                                   _DONE, (True, False))
        for n, (state, err, raw, done, matched) in enumerate(combos):
            received = at + n * 1_000_003
            conn.execute(
                "INSERT INTO receipts (msg, smsc_id, gateway, state, error_code, done_at,"
                " received_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (refs[n % len(refs)] if matched else None, None if n % 7 == 0 else f"s21-{n}",
                 "backup" if n % 3 else "smsc", state.value, err,
                 None if done is None else received + done // timedelta(microseconds=1),
                 received, raw or None))
        for i, state in enumerate(ReceiptState):  # the last of a message's: the log shows it
            conn.execute("INSERT INTO receipts (msg, smsc_id, gateway, state, received_at)"
                         " VALUES (?, 'last', 'smsc', ?, ?)", (refs[i], state.value, at + i))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 21


def _as_stored_v21(path: Path) -> dict[str | None, list[ReceiptRow]]:
    receipts: dict[str | None, list[ReceiptRow]] = {}
    for r in _rows(path, "SELECT r.*, m.id AS message_id FROM receipts r"
                         " LEFT JOIN messages m ON m.ref = r.msg ORDER BY r.id"):
        receipts.setdefault(r["message_id"], []).append(ReceiptRow(
            r["id"], r["message_id"], r["gateway"], r["smsc_id"], r["state"], r["error_code"],
            None if r["done_at"] is None else from_micros(r["done_at"]),
            from_micros(r["received_at"]), r["raw"] or ""))
    return receipts


async def _whole_log(path: Path) -> list[dict[str, object]]:
    async with ReportReader(path) as reader:  # read-only: the file keeps its version
        return await reader.log_page(MessageFilter(limit=None), unmasked=True)


async def test_version_21_file_upgrades_keeping_every_receipt(tmp_path: Path) -> None:
    path = tmp_path / "v21.db"
    _v21_file(path)
    receipts = _as_stored_v21(path)
    rows = [r for rs in receipts.values() for r in rs]
    assert len(rows) > 1500 and {r.state for r in rows} == {s.value for s in ReceiptState}
    assert {r.state for r in receipts[None]} == {s.value for s in ReceiptState}
    assert {r.done_at - r.received_at for r in rows if r.done_at} >= set(_DONE[1:])
    assert any(r.raw for r in receipts[None]) and any(not r.raw for r in receipts[None])
    reports_before = await _reports(path)
    log_before = await _whole_log(path)
    assert {row["receipt_state"] for row in log_before} >= {s.value for s in ReceiptState}

    async with SqliteStore(path) as store:
        for mid, want in receipts.items():
            if mid is not None:
                assert await store.receipts(message_id=mid) == want, mid
        assert await store.receipts(unmatched=True) == receipts[None]
        assert await store.receipts() == sorted(rows, key=lambda r: r.id)
    assert _rows(path, "PRAGMA user_version")[0][0] >= 22
    assert await _reports(path) == reports_before
    assert await _whole_log(path) == log_before
    # Most receipts (delivered, done as received) store no bytes for their state and done date.
    for r in _rows(path, "SELECT state, done_off FROM receipts WHERE id <= 1000"):
        assert r["done_off"] is None or isinstance(r["done_off"], int)
    assert _rows(path, "SELECT typeof(state) FROM receipts GROUP BY 1")[0][0] == "integer"

    # A receipt sent again (matched or not, with or without its done date) is a repeat.
    async with SqliteStore(path) as store:
        for r in (receipts[None][0], receipts[None][5], *next(
                rs for mid, rs in receipts.items() if mid is not None and len(rs) > 3)[:4]):
            again = Receipt(r.gateway, ReceiptState(r.state), r.smsc_id, r.message_id,
                            r.error_code, r.done_at, r.raw)
            if r.message_id is None and r.smsc_id is None:
                continue
            out = await store.apply_receipt(again, now=END + timedelta(days=1))
            assert out.duplicate, r
            # The same but done a microsecond later is another receipt.
            if r.done_at is not None:
                other = Receipt(r.gateway, ReceiptState(r.state), r.smsc_id, r.message_id,
                                r.error_code, r.done_at + timedelta(microseconds=1), r.raw)
                out = await store.apply_receipt(other, now=END + timedelta(days=1))
                assert not out.duplicate, r
