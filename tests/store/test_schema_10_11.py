"""Schema versions 10 (rule outcomes one row per call and trigger) and 11 (a call's times as
integers): a version 9 file with representative rows upgrades keeping every row, and the store
reads back what was there."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from agent.models import CallRecord, MessageState, RuleOutcome, Trigger
from agent.store.base import CallFilter
from agent.store.frozen import key_digest_v15
from agent.store.histpack import unpack_events
from agent.store.migrations import _V15_COLUMNS
from agent.store.packing import MESSAGE_LABELS, id_sql, label_sql, micros, unpack_record
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.rows import detail_sql, receipt_state_sql
from agent.store.sqlite.synth import generate, migrate
from agent.store.stamps import from_ts
from tests.store.upgrades import links_as_stored

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_UNCHANGED = ("messages", "message_history", "message_smsc_ids", "receipts", "links",
              "clicks", "replies", "report_daily", "report_slots", "report_hist")


def _v9_file(path: Path) -> None:
    generate(path, messages=1200, days=10, end=END, seed=5, chunk=400, upgrade=False)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, 6, 9)
        # Messages in every state (the generator leaves out those still in flight).
        conn.execute("BEGIN")
        for i, state in enumerate(MessageState):
            conn.execute(
                "INSERT INTO messages (id, idempotency_key, call_id, rule, trigger,"
                " recipient_kind, number, template, gateway, sender_id, text, encoding, segments,"
                " category, state, attempts, smsc_ids, created_at, updated_at, pbx)"
                " SELECT 'st' || ?, 'st-key' || ?, call_id, rule, trigger, recipient_kind, number,"
                " template, gateway, sender_id, text, encoding, segments, category, ?, attempts,"
                " smsc_ids, created_at, updated_at, pbx FROM messages LIMIT 1",
                (i, i, state.value))
        # Outcomes with a skipped recipient, a reason and an empty skipped list, on both
        # triggers, positions written out of order.
        cid, pbx = conn.execute("SELECT call_id, pbx FROM calls LIMIT 1").fetchone()
        conn.execute("DELETE FROM rule_outcomes WHERE call_id = ? AND pbx = ?", (cid, pbx))
        for trig, pos, rule, matched, reason, skipped in (
                ("call_completed", 1, "b", 0, "disposition is answered, rule wants ['missed']",
                 '["caller: already taken by rule \'a\'"]'),
                ("call_completed", 0, "a", 1, None, "[]"),
                ("call_completed", 2, "c", 1, None, '["agent: already taken by rule \'a\'"]'),
                ("call_connected", 0, "ivr", 0, "rule is disabled (enabled: false)", "[]")):
            conn.execute(
                "INSERT INTO rule_outcomes (call_id, pbx, trigger, position, rule, matched,"
                " reason, skipped, decided_at) VALUES (?,?,?,?,?,?,?,?,"
                " '2026-11-30T11:59:59.123456Z')",
                (cid, pbx, trig, pos, rule, matched, reason, skipped))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 9
    finally:
        conn.close()


# A message's times that became integer microseconds, and the schema that made them so.
_MESSAGE_TIMES = {"queued_at": 17, "expires_at": 17, "call_ended_at": 17, "created_at": 19,
                  "submitted_at": 19, "final_at": 19, "next_attempt_at": 19,
                  "submitting_since": 19}

# A message's columns read through an expression since a schema: its detail (21), its labels
# stored as codes (25).
_LABELS = ("detail", *MESSAGE_LABELS)

# What the rows say, at any version: since schema 13 a message also has a ref, and its history
# and segment ids name it by that; since schema 15 its idempotency key is a digest and it has no
# updated_at.
_LOGICAL = {
    "messages": "SELECT " + ", ".join(
        "{" + c + "}" if c in _MESSAGE_TIMES or c in _LABELS or c == "id" else c
        for c in _V15_COLUMNS.split(", "))
    + ", {idem} FROM messages",
    "message_history": "SELECT {mid}, h.seq, h.at, h.state, h.reason, h.detail"
                       " FROM message_history h JOIN messages m ON m.{ref} = h.{msg}",
    "message_smsc_ids": "SELECT s.gateway, s.smsc_id, {mid}"
                        " FROM message_smsc_ids s JOIN messages m ON m.{ref} = s.{msg}",
    "replies": "SELECT id, {rid}, gateway, number, recipient, text, keyword, action, sentiment,"
               " rating, received_at FROM replies",
    "receipts": "SELECT r.id, {mid}, r.smsc_id, r.gateway, {state}, r.error_code, {done},"
                " {received}, r.raw FROM receipts r LEFT JOIN messages m ON m.{ref} = r.{rmsg}",
}


def _text(us: str) -> str:
    return (f"strftime('%Y-%m-%dT%H:%M:%S', {us} / 1000000, 'unixepoch')"
            f" || printf('.%06dZ', {us} % 1000000)")


def _history_v23(c: sqlite3.Connection) -> list[tuple[object, ...]]:
    """``_LOGICAL``'s history rows from schema 23's packed logs (one per message)."""
    return sorted(
        (mid, seq, at, state, reason, detail)
        for mid, created, log in c.execute(
            f"SELECT {id_sql('m.id')}, m.created_at, h.log FROM message_history h"
            " JOIN messages m ON m.ref = h.msg")
        for seq, (at, state, reason, detail) in enumerate(
            unpack_events(created if isinstance(created, int) else micros(from_ts(created)),
                          log), 1))


def _dump(path: Path, table: str) -> list[tuple[object, ...]]:
    if table == "links":  # by ref, its time an integer since schema 24
        return links_as_stored(path)
    with sqlite3.connect(path) as c:
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if table == "message_history" and version >= 23:
            return _history_v23(c)
        v13, v14 = version >= 13, version >= 14
        c.create_function("key_digest", 1, key_digest_v15)
        sql = _LOGICAL.get(table, f"SELECT * FROM {table}").format(
            ref="ref" if v13 else "id", msg="msg" if v13 else "message_id",
            # a message's id: 16 bytes since schema 26, read as its text
            id=id_sql("id"), mid=id_sql("m.id"), rid=id_sql("message_id"),
            rmsg="msg" if v14 else "message_id",
            idem="idem" if version >= 15 else "key_digest(idempotency_key)",
            # integer microseconds since schema 16: as the text they were
            done=(_text("(r.received_at - r.done_off)") if version >= 22
                  else _text("r.done_at") if version >= 16 else "r.done_at"),
            # a receipt's state a code since schema 22
            state=receipt_state_sql("r.state") if version >= 22 else "r.state",
            received=_text("r.received_at") if version >= 16 else "r.received_at",
            # and a message's since schemas 17 and 19; a detail its receipt gave, said by the
            # row since schema 21
            detail=detail_sql("messages") if version >= 21 else "detail",
            # and its labels, codes since schema 25
            **{c: label_sql(c) if version >= 25 else c for c in MESSAGE_LABELS},
            **{c: _text(c) if version >= v else c for c, v in _MESSAGE_TIMES.items()})
        return c.execute(f"{sql} ORDER BY 1, 2, 3").fetchall()


def _calls_v9(path: Path) -> dict[tuple[str, str], tuple[CallRecord, str | None]]:
    with sqlite3.connect(path) as c:
        c.row_factory = sqlite3.Row
        return {(r["call_id"], r["pbx"]): (CallRecord.from_dict(unpack_record(r, r["record"])),
                                           r["ended_at"])
                for r in c.execute("SELECT * FROM calls")}


def _outcomes_v9(path: Path) -> dict[tuple[str, str], list[RuleOutcome]]:
    out: dict[tuple[str, str], list[RuleOutcome]] = {}
    with sqlite3.connect(path) as c:
        for cid, pbx, trig, rule, matched, reason, skipped in c.execute(
                "SELECT call_id, pbx, trigger, rule, matched, reason, skipped FROM rule_outcomes"
                " ORDER BY call_id, pbx, trigger = 'call_completed', position"):
            out.setdefault((cid, pbx), []).append(RuleOutcome(
                rule, bool(matched), reason, tuple(json.loads(skipped)), Trigger(trig)))
    return out


async def test_version_9_file_upgrades_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v9.db"
    _v9_file(path)
    before = {t: _dump(path, t) for t in _UNCHANGED}
    outcomes = _outcomes_v9(path)
    calls = _calls_v9(path)
    ends = sorted(e for _, e in calls.values() if e)
    # A call stored at connect time: no end yet.
    with sqlite3.connect(path) as c:
        c.execute("UPDATE calls SET ended_at = NULL, trigger = 'call_connected'"
                  " WHERE rowid = (SELECT min(rowid) FROM calls)")
    calls = _calls_v9(path)
    assert any(e is None for _, e in calls.values())
    states = {r[0] for r in _dump(path, "messages")}
    assert len(outcomes) > 1000 and sum(map(len, outcomes.values())) > 3000
    assert {s for s in states if s.startswith("st")} == {f"st{i}" for i in range(10)}
    with sqlite3.connect(path) as c:
        matched = c.execute("SELECT count(*) FROM receipts WHERE message_id IS NOT NULL")  # v9
        assert matched.fetchone()[0] > 500
        assert c.execute("SELECT count(*) FROM links").fetchone()[0] > 100

    t0 = time.perf_counter()
    async with SqliteStore(path) as store:
        took = time.perf_counter() - t0
        for (cid, pbx), want in outcomes.items():
            assert await store.rule_outcomes(cid, pbx=pbx) == want, (cid, pbx)
        odd = next(k for k, v in outcomes.items() if len(v) == 4)
        assert [(o.rule, o.trigger, o.skipped) for o in outcomes[odd]] == [
            ("ivr", Trigger.CALL_CONNECTED, ()),
            ("a", Trigger.CALL_COMPLETED, ()),
            ("b", Trigger.CALL_COMPLETED, ("caller: already taken by rule 'a'",)),
            ("c", Trigger.CALL_COMPLETED, ("agent: already taken by rule 'a'",))]
        # Every message reads back, in each state; links and receipts still find theirs.
        for i, state in enumerate(MessageState):
            row = await store.get_message(f"st{i}")
            assert row is not None and row.state is state
        link = links_as_stored(path)[0]
        got = await store.resolve_link(str(link[0]))
        assert got is not None and got.message_id == link[1] and got.url == link[2]
        mid = next(r[1] for r in _dump(path, "receipts") if r[1] is not None)
        assert [r.message_id for r in await store.receipts(message_id=mid)] == [mid]
        # Every call reads back whole; the calls view's time filter and order, and the newest
        # end (where reconciliation starts), are the same instants.
        for (cid, pbx), (record, _) in calls.items():
            assert await store.get_call(cid, pbx=pbx) == record, (cid, pbx)
        mid_end = datetime.fromisoformat(ends[len(ends) // 2])
        since = await store.list_calls(CallFilter(since=mid_end, limit=100_000))
        assert sorted((s.pbx, s.record.call_id) for s in since) == sorted(
            (p, c) for (c, p), (_, e) in calls.items() if e and e >= ends[len(ends) // 2])
        assert [s.record.ended_at for s in since] == sorted(
            (s.record.ended_at for s in since), reverse=True)
        assert await store.newest_call_end() == datetime.fromisoformat(ends[-1])
        # New judgements are written in the new shape and replace the old ones whole.
        new = [RuleOutcome("a", False, "quiet hours", (), Trigger.CALL_COMPLETED)]
        await store.record_rule_outcomes(odd[0], Trigger.CALL_COMPLETED, new, now=END,
                                         pbx=odd[1])
        assert await store.rule_outcomes(odd[0], pbx=odd[1]) == [outcomes[odd][0], *new]
    assert {t: _dump(path, t) for t in _UNCHANGED} == before
    assert took < 30
