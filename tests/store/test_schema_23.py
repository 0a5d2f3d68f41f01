"""Schema 23 (a message's history as one row, its events packed in a blob): a version 22 file
whose history has every state, every reason and detail the agent writes and others it never
did, times before and long after the message's creation and gaps in its sequence upgrades
keeping every event exactly (time to the microsecond, state, reason, detail, order), pruned
messages keep having none, and the upgraded history grows as before."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from agent.models import MessageState, Receipt, ReceiptState
from agent.store.base import MessageEvent
from agent.store.migrations import LATEST_VERSION
from agent.store.packing import STATE_CODES, STATES, from_micros, micros
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.synth import migrate
from agent.store.stamps import from_ts
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows
from tests.store.test_schema_15_17 import _v14_file

# (µs after the message's creation, reason, detail): what the agent writes, and what it may
# meet in an old file.
_EVENTS: list[tuple[int, str | None, str | None]] = [
    (0, None, None),
    (1, "submitting", "attempt 1 via smsc"),
    (999_999, "submitting", "attempt 12 via my-gateway ✓"),
    (19_061, None, "smsc accepted, smsc ids S356a4156977a41b"),
    (20_000, None, "kannel accepted, smsc ids 0f9e6d1c-77aa-4b2e,ABCDEF0123,42,,x"),
    (7_709_102, "receipt", "smsc receipt delivered for S356a4156977a41b"),
    (86_400_000_001, "receipt", "backup receipt undelivered for B74120173fffbc22"),
    (3, "receipt", "smsc receipt rejected for 00ab"),
    (4, "receipt", "smsc receipts: 2 of 3 parts delivered"),
    (5, "receipt", "smsc receipts: 02 of 3 parts delivered"),
    (6, "receipt", "a receipt  for "),
    (-1, "opt_out", None),
    (-86_400_000_000, "submit_failed", "submit_sm_resp 0x00000045"),
    (7, "interrupted", "agent stopped during submit started at 2026-11-29T10:00:00.500000Z"),
    (8, "operator_resend", "resent by ops: the SMSC did not have it"),
    (9, "a reason no table knows", "détail: ünïcode, ✓ and\nnew lines"),
    (10, "", ""),
    (11, None, ""),
    (12, "submitting", "attempt 01 via smsc"),
    (13, "submitting", "attempt 0 via smsc"),
    (14, "receipt", None),
]


def _v22_file(path: Path, make_decision: MakeDecision) -> None:
    """The schema 15-17 test's file at version 22, with the history of one message in each
    state holding every event of ``_EVENTS`` (in that state, at sequence numbers with gaps,
    inserted out of order), one message's events at each time of a second, and a message
    pruned by retention (no history)."""
    _v14_file(path, make_decision)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 14, 22)
        conn.execute("BEGIN")
        refs = [r[0] for r in conn.execute(
            "SELECT ref FROM messages WHERE id LIKE 'st%' ORDER BY id")]
        for ref, code in zip(refs, STATE_CODES.values(), strict=False):
            conn.execute("DELETE FROM message_history WHERE msg = ?", (ref,))
            base = conn.execute("SELECT created_at FROM messages WHERE ref = ?",
                                (ref,)).fetchone()[0]  # integer microseconds (schema 19)
            for seq, (after, reason, detail) in reversed(list(enumerate(_EVENTS))):
                conn.execute(
                    "INSERT INTO message_history (msg, seq, at, state, reason, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (ref, 3 * seq + 1, base + after, (code + seq) % len(STATE_CODES),
                     reason, detail))
        # Every microsecond of a second, and its ends, after a message created at .999999.
        ref = refs[-1]
        base = micros(from_ts("2026-11-29T10:00:00.999999Z"))
        conn.execute("UPDATE messages SET created_at = ? WHERE ref = ?", (base, ref))
        conn.execute("DELETE FROM message_history WHERE msg = ?", (ref,))
        for seq, after in enumerate((0, 1, 999_999, 1_000_000, 1_000_001, 2**40, -(2**40)), 1):
            conn.execute("INSERT INTO message_history (msg, seq, at, state, reason, detail)"
                         " VALUES (?, ?, ?, 2, NULL, NULL)", (ref, seq, base + after))
        # What retention leaves of a message past its details horizon: no history at all.
        conn.execute("DELETE FROM message_history WHERE msg IN (SELECT ref FROM messages"
                     " WHERE id = 'st2' OR (id NOT LIKE 'st%' AND ref % 50 = 0))")
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 22


def _events_v22(path: Path) -> dict[str, list[MessageEvent]]:
    """Every message's history as version 22 stores it (a row an event, by ``seq``)."""
    out: dict[str, list[MessageEvent]] = {r["id"]: [] for r in _rows(
        path, "SELECT id FROM messages")}
    for r in _rows(path, "SELECT m.id, h.at, h.state, h.reason, h.detail FROM message_history h"
                         " JOIN messages m ON m.ref = h.msg ORDER BY h.msg, h.seq"):
        out[r["id"]].append(MessageEvent(r["id"], from_micros(r["at"]), STATES[r["state"]],
                                         r["reason"], r["detail"]))
    return out


async def test_version_22_history_upgrades_event_for_event(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v22.db"
    _v22_file(path, make_decision)
    before = _events_v22(path)
    assert sum(map(len, before.values())) > 3500
    assert {e.state for es in before.values() for e in es} == set(MessageState)
    assert {(e.reason, e.detail) for es in before.values() for e in es} >= {
        (r, d) for _, r, d in _EVENTS}
    assert before["st2"] == [] and sum(not es for es in before.values()) > 10
    rows_before = len(_rows(path, "SELECT * FROM message_history"))
    reports_before = await _reports(path)

    async with SqliteStore(path) as store:
        for mid, events in before.items():
            assert await store.message_events(mid) == events, mid
    assert await _reports(path) == reports_before

    # One row a message that has a history, and nothing else: no index, no seq.
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    assert [r["name"] for r in _rows(path, "PRAGMA table_info(message_history)")] == [
        "msg", "log"]
    assert _rows(path, "PRAGMA index_list(message_history)") == []
    assert len(_rows(path, "SELECT * FROM message_history")) == sum(
        bool(es) for es in before.values()) < rows_before / 2

    # The upgraded history grows from where it was, in the packed form.
    async with SqliteStore(path) as store:
        st = await store.get_message("st0")
        assert st is not None
        at = st.created_at + timedelta(hours=2, microseconds=7)
        moved = await store.transition("st0", MessageState.FAILED, now=at,
                                       reason="operator_dropped", detail="dropped by ops")
        assert moved is not None
        assert await store.message_events("st0") == [*before["st0"], MessageEvent(
            "st0", at, MessageState.FAILED, "operator_dropped", "dropped by ops")]


async def test_new_history_reads_back_what_the_agent_wrote(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    """A message's whole life through the store (queued, claimed, submitted with two parts,
    receipts): each event as it was written, in order; a message with none has none."""
    t = END + timedelta(minutes=1)
    async with SqliteStore(tmp_path / "d.db") as store:
        row, _ = await store.insert_message(make_decision(), state=MessageState.QUEUED, now=t)
        assert await store.claim_for_submit(row.id, now=t + timedelta(microseconds=1))
        await store.record_submit(row.id, gateway="smsc", smsc_ids=["a1f", "a20"],
                                  now=t + timedelta(seconds=1), hangup_to_submit_ms=3.5)
        for i, part in enumerate(("a1f", "a20")):
            await store.apply_receipt(Receipt(gateway="smsc", smsc_id=part,
                                              state=ReceiptState.DELIVERED),
                                      now=t + timedelta(seconds=5 + i))
        events = [(e.at - t, e.state, e.reason, e.detail)
                  for e in await store.message_events(row.id)]
        assert events == [
            (timedelta(0), MessageState.QUEUED, None, None),
            (timedelta(microseconds=1), MessageState.QUEUED, "submitting", "attempt 1 via smsc"),
            (timedelta(seconds=1), MessageState.SUBMITTED, None,
             "smsc accepted, smsc ids a1f,a20"),
            (timedelta(seconds=6), MessageState.DELIVERED, "receipt",
             "smsc receipts: 2 of 2 parts delivered"),
        ]
        assert await store.message_events("no-such-message") == []
