"""Schema 19 (a message's created, submitted, final, next attempt and submitting-since times as
integer microseconds, the report triggers reading them so): a version 17 file with messages in
every state and every time set upgrades keeping every message (each time the microseconds its
text said), the reports and SMS log pages unchanged, and the rollups kept from before go on
adding up with the changes made after (the triggers count the same day, quarter hour and
delivery seconds, to the bit, from the integers as from the text)."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.models import InboundSms, MessageState, Receipt, ReceiptState
from agent.store.base import MessageFilter, MessageRow
from agent.store.migrations import LATEST_VERSION
from agent.store.packing import id_key, id_word, micros
from agent.store.rollups import MICROS, TEXT
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.rows import _message
from agent.store.sqlite.synth import migrate
from agent.store.stamps import ts
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows
from tests.store.test_schema_15_17 import _v14_file
from tests.store.upgrades import rolled_and_exact

_TIMES = ("created_at", "queued_at", "submitted_at", "final_at", "next_attempt_at",
          "submitting_since", "expires_at", "call_ended_at")
_ROLLUPS = ("report_daily", "report_hist", "report_slots", "report_replies")


def _v17_file(path: Path, make_decision: MakeDecision) -> None:
    """Schema 15-17's test file (every state, every column; a pruned row, the agent's own)
    at version 17, with a message submitted but not yet final, a time in the last half
    millisecond of a second and one on a quarter hour's edge."""
    _v14_file(path, make_decision)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 14, 17)
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO messages (id, idem, call_id, rule, trigger, recipient_kind, number,"
            " template, gateway, sender_id, text, encoding, segments, category, state, attempts,"
            " smsc_ids, created_at, queued_at, submitted_at, hangup_to_submit_ms, pbx)"
            " SELECT 'late1', 77, call_id, rule, trigger, recipient_kind, number, template,"
            " 'smsc', sender_id, text, encoding, segments, category, 'submitted', 1, '[\"L-1\"]',"
            " '2026-11-29T23:44:59.999700Z', queued_at, '2026-11-29T23:45:00.000000Z', 12.5,"
            " pbx FROM messages WHERE id = 'st1'")
        conn.execute("INSERT INTO message_smsc_ids (gateway, smsc_id, msg)"
                     " SELECT 'smsc', 'L-1', ref FROM messages WHERE id = 'late1'")
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 17


def _as_stored(path: Path) -> dict[str, MessageRow]:
    return {r["id"]: _message(r) for r in _rows(path, "SELECT * FROM messages")}


def _tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    return {t: [tuple(r) for r in _rows(path, f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4")]
            for t in _ROLLUPS}


async def test_version_17_file_upgrades_keeping_every_time(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v17.db"
    _v17_file(path, make_decision)
    before = _as_stored(path)
    assert {m.state for m in before.values()} == set(MessageState)
    for name in _TIMES:  # every time is set somewhere, and kept as text before
        assert any(getattr(m, name) is not None for m in before.values()), name
    text = {r["id"]: r for r in _rows(path, "SELECT * FROM messages")}
    reports_before, rollups_before = await _reports(path), _tables(path)

    async with SqliteStore(path) as store:
        for mid, want in before.items():
            assert await store.get_message(mid) == want, mid
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    # Each time is the integer its text said, to the microsecond.
    for r in _rows(path, "SELECT * FROM messages"):
        for name in _TIMES:
            was = text[id_word(r["id"])][name]
            want = None if was is None else (
                was if isinstance(was, int) else micros(datetime.fromisoformat(was)))
            assert r[name] == want and (was is None or type(r[name]) is int), (r["id"], name)
    types = {r[0] for r in _rows(path, "SELECT DISTINCT " + " || ',' || ".join(
        f"typeof({c})" for c in _TIMES) + " FROM messages")}
    assert all(set(t.split(",")) <= {"integer", "null"} for t in types), types
    assert await _reports(path) == reports_before
    assert _tables(path) == rollups_before
    indexes = {r["name"] for r in _rows(path, "PRAGMA index_list(messages)")}
    assert {"messages_created", "messages_number_sent", "messages_number_rule_sent",
            "messages_rare_state", "messages_pbx_created", "messages_unpruned"} <= indexes


async def test_rollups_counted_before_the_upgrade_add_up_with_changes_after(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    """A message counted under its text times and changed after the upgrade is taken out of
    the very groups it was counted in: the rollups equal a count of the rows."""
    path = tmp_path / "v17.db"
    _v17_file(path, make_decision)
    t = END + timedelta(minutes=1)
    async with SqliteStore(path) as store:
        # the pre-upgrade submitted message gets its receipt: counted now as delivered
        await store.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                          smsc_id="L-1", done_at=t), now=t)
        late = await store.get_message("late1")
        assert late is not None and late.state is MessageState.DELIVERED
        # a delivered one from before is failed by hand; a queued one is suppressed
        delivered = [m.id for m in await store.list_messages(MessageFilter(
            states=(MessageState.DELIVERED,), limit=40))]
        for mid in delivered[:20]:
            assert await store.transition(mid, MessageState.FAILED, now=t, reason="test",
                                          from_states={MessageState.DELIVERED})
        for m in await store.list_messages(MessageFilter(states=(MessageState.QUEUED,))):
            await store.transition(m.id, MessageState.SUPPRESSED, now=t, reason="dnd")
        # links, clicks and replies on messages from before
        for i, mid in enumerate(delivered[20:30]):
            await store.add_link(f"U{i:07d}", "https://x.in/t", message_id=mid, now=t)
            await store.add_click(f"U{i:07d}", at=t)
            await store.add_reply(InboundSms("smsc", "+919800000000", "ACMECO", "thanks", t),
                                  message_id=mid, sentiment=0.5)
        # and a new message, sent and delivered
        row, _ = await store.insert_message(make_decision(call_id="new-1"),
                                            state=MessageState.QUEUED, now=t)
        await store.claim_for_submit(row.id, now=t)
        await store.record_submit(row.id, gateway="smsc", smsc_ids=["N-1"],
                                  now=t + timedelta(microseconds=999_999),
                                  hangup_to_submit_ms=3.0)
        await store.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                          smsc_id="N-1", done_at=t), now=t + timedelta(seconds=7))

    rolled, exact = await rolled_and_exact(path)
    assert rolled == exact
    # No group is left with a count the rows do not have (a message taken out of a group it
    # was not counted in would leave -1 in one and +1 in another).
    for table in ("report_daily", "report_slots", "report_hist"):
        assert not _rows(path, f"SELECT * FROM {table} WHERE n < 0"), table
    assert not _rows(path, "SELECT * FROM report_hist WHERE n = 0 AND total <> 0")
    # The histograms hold each delivered message once (its bucket: the next test).
    hist = {tuple(r[:4]): r[4] for r in _rows(
        path, "SELECT day, rule, gateway, metric, sum(n) FROM report_hist GROUP BY 1, 2, 3, 4")}
    with closing(sqlite3.connect(path)) as c:
        want = {tuple(r[:4]): r[4] for r in c.execute(
            f"SELECT {MICROS.day('m.created_at')}, m.rule, m.gateway, 'delivery', count(*)"
            " FROM messages m WHERE m.state = 'delivered' AND m.final_at IS NOT NULL"
            " AND m.submitted_at IS NOT NULL GROUP BY 1, 2, 3, 4")}
    assert {k: v for k, v in hist.items() if k[3] == "delivery" and v} == want


def test_integer_times_give_the_text_times_day_slot_and_delivery_to_the_bit() -> None:
    """The triggers' and the partial days' reading of an integer time is the text one's: the
    same UTC day, quarter hour and (the same double) seconds from submit to final, for times
    on a day's and a quarter hour's edges, and random. But for a time in a second's last half
    millisecond, which the text's reading took for the next second (SQLite reads fractions of
    a second to the millisecond: micros_sql_v16), the integers' seconds are the exact ones."""
    rnd = random.Random(18)
    base = datetime(2026, 3, 29, tzinfo=UTC)
    edges = [base, base - timedelta(microseconds=1), base + timedelta(minutes=15),
             base + timedelta(minutes=15) - timedelta(microseconds=1),
             base + timedelta(seconds=59, microseconds=999_500),
             base + timedelta(seconds=59, microseconds=999_499),
             datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)]
    times = edges + [base + timedelta(microseconds=rnd.randrange(-10**14, 10**14))
                     for _ in range(3000)]
    pairs = [(a, a + timedelta(microseconds=rnd.choice([0, 1, 999_999, 1_000_001]) +
                               rnd.randrange(0, 10**9))) for a in times]
    with closing(sqlite3.connect(":memory:")) as c:
        c.execute("CREATE TABLE t (created_at, submitted_at, final_at)")
        c.execute("CREATE TABLE m (created_at, submitted_at, final_at)")
        c.executemany("INSERT INTO t VALUES (?, ?, ?)", [(ts(a), ts(a), ts(b)) for a, b in pairs])
        c.executemany("INSERT INTO m VALUES (?, ?, ?)",
                      [(micros(a), micros(a), micros(b)) for a, b in pairs])
        got = [c.execute(f"SELECT {x.day('created_at')}, {x.slot('created_at')},"
                         f" {x.delivery(table)} FROM {table} ORDER BY rowid").fetchall()
               for x, table in ((TEXT, "t"), (MICROS, "m"))]
    exact = [(b - a).total_seconds() for a, b in pairs]
    off = [i for i, (a, b) in enumerate(pairs)
           if a.microsecond >= 999_500 or b.microsecond >= 999_500]
    assert 0 < len(off) < 20
    for i, (text, ints) in enumerate(zip(*got, strict=True)):
        assert text[:2] == ints[:2], pairs[i]
        assert ints[2] == pytest.approx(exact[i], abs=1e-9), pairs[i]
        assert i in off or text[2] == ints[2], pairs[i]
    assert len({r[1] for r in got[0]}) > 2000  # the times spread over many quarter hours


@pytest.mark.parametrize("when", ["2026-11-29T10:00:00.000000Z", "2026-11-29T23:59:59.999999Z"])
async def test_recovered_submit_says_its_start_as_before(
        tmp_path: Path, make_decision: MakeDecision, when: str) -> None:
    """An interrupted submit's detail names when it started in the text form it always had."""
    async with SqliteStore(tmp_path / "r.db") as store:
        row, _ = await store.insert_message(make_decision(), state=MessageState.QUEUED, now=END)
        started = datetime.fromisoformat(when)
        await store.claim_for_submit(row.id, now=max(started, END))
        with closing(sqlite3.connect(tmp_path / "r.db")) as c, c:
            c.execute("UPDATE messages SET submitting_since = ? WHERE id = ?",
                      (micros(started), id_key(row.id)))
        [got] = await store.recover_in_flight(now=END + timedelta(hours=1))
    assert got.detail == f"agent stopped during submit started at {when}"
    assert got.submitting_since is None and got.state is MessageState.AMBIGUOUS
