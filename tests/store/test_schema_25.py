"""Schema 25 (a message's trigger, recipient kind, encoding and category stored as small
integer codes, a word without a code as itself): a version 24 file holding every value of each,
and words without a code, upgrades keeping every message as it read (its idempotency key too),
the reports and SMS log pages, the policy reads (messages_number_sent holds the kind) and the
rate counters' start unchanged; a message inserted after is stored coded and reads back the
same, and a replay of its decision finds it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.models import MessageState, RecipientKind, Trigger
from agent.store.base import FactsAsk, MessageFilter, MessageRow
from agent.store.migrations import LATEST_VERSION
from agent.store.packing import (
    MESSAGE_LABELS,
    from_micros,
    id_word,
    label_sql,
    label_word,
    micros,
)
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.records import facts_query
from agent.store.sqlite.reports import ReportReader
from agent.store.sqlite.rows import _message
from agent.store.sqlite.synth import migrate
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows
from tests.store.test_schema_21 import _v20_file

VERSION = 25
_LABELS = tuple(MESSAGE_LABELS)  # trigger, recipient_kind, encoding, category

# (id, trigger, recipient kind, encoding, category): every value of each, and words without a
# code ("binary", "otp"; "odd" has a trigger and a kind without one, which MessageRow cannot
# hold: it is read by the log and the stored columns only).
_ROWS = (
    ("lab1", "call_connected", "caller", "GSM-7", "transactional"),
    ("lab2", "call_completed", "agent", "UCS-2", "promotional"),
    ("lab3", "call_completed", "fixed", "UCS-2", "service"),
    ("lab4", "call_connected", "agent", "binary", "otp"),
    ("odd", "call_transferred", "supervisor", "GSM-7", "transactional"),
)
# The words each column's codes stand for, as schema 25 made them (never edit).
_CODES = {
    "trigger": {"call_connected": 0, "call_completed": 1},
    "recipient_kind": {"caller": 0, "agent": 1, "fixed": 2},
    "encoding": {"GSM-7": 0, "UCS-2": 1},
    "category": {"transactional": 0, "promotional": 1, "service": 2},
}


def _v24_file(path: Path, make_decision: MakeDecision) -> None:
    _v20_file(path, make_decision)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 20, VERSION - 1)
        conn.execute("BEGIN")
        for n, (mid, trigger, kind, encoding, category) in enumerate(_ROWS):
            conn.execute(
                "INSERT INTO messages (id, idem, call_id, rule, trigger, recipient_kind, number,"
                " template, gateway, sender_id, text, encoding, segments, category, state,"
                " attempts, smsc_ids, created_at, submitted_at, pbx)"
                " SELECT ?, ?, call_id, rule, ?, ?, number, template, gateway, sender_id, text,"
                " ?, segments, ?, 'submitted', 1, '[]', created_at, created_at, pbx"
                " FROM messages WHERE id = 'st1'",
                (mid, 900 + n, trigger, kind, encoding, category))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION - 1


def _as_stored(path: Path) -> dict[str, MessageRow]:
    return {m.id: m for m in map(_message, _rows(path, "SELECT * FROM messages WHERE id != 'odd'"))}


def _policy_reads(path: Path) -> list[tuple[object, ...]]:
    """The policy reads' answers (records.facts_query's count, by audience) from the stored
    words or codes, as the file says them."""
    kinds = f"{label_sql('recipient_kind')} = 'agent'"
    return [tuple(r) for r in _rows(
        path, f"SELECT number, {kinds}, count(*) FROM messages WHERE number IS NOT NULL"
        " AND (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"
        " GROUP BY 1, 2 ORDER BY 1, 2")]


async def _odd_log(path: Path) -> list[dict[str, Any]]:
    """The SMS log's rows of the messages _ROWS adds (the log shows kind and encoding)."""
    ids = {mid for mid, *_ in _ROWS}
    async with ReportReader(path) as reader:
        page = await reader.log_page(MessageFilter(limit=None), unmasked=True)
    return sorted((r for r in page if r["id"] in ids), key=lambda r: r["id"])


async def test_version_24_file_upgrades_keeping_every_label(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v24.db"
    _v24_file(path, make_decision)
    before = _as_stored(path)
    for c in ("recipient_kind", "encoding", "category"):  # every value is somewhere
        assert {getattr(m, c) for m in before.values()} >= set(_CODES[c]), c
    assert {m.trigger for m in before.values()} == set(Trigger)
    assert {m.recipient_kind for m in before.values()} == set(RecipientKind)
    words = {r["id"]: tuple(r[c] for c in _LABELS)
             for r in _rows(path, "SELECT * FROM messages")}
    reports_before, logs_before = await _reports(path), await _odd_log(path)
    policy_before = _policy_reads(path)
    assert {a for _, a, _ in policy_before} == {0, 1}
    since = END - timedelta(days=400)
    sent_before = _sent_since(path, since)
    assert {k for k, _, _ in sent_before} >= {"caller", "agent", "fixed", "supervisor"}

    async with SqliteStore(path) as store:
        for mid, want in before.items():
            assert await store.get_message(mid) == want, mid
        assert sorted(await store.sent_since(since)) == sent_before
        for number, agents in {(n, a) for n, a, _ in policy_before}:
            facts = await store.policy_facts(str(number), "none", sent_since=since,
                                             agents=bool(agents))
            assert facts.sent_to_number == sum(
                k for n, a, k in policy_before if (n, a) == (number, agents)), (number, agents)
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    # each label is its code, or the word itself where it has none
    for r in _rows(path, "SELECT * FROM messages"):
        for c, word in zip(_LABELS, words[id_word(r["id"])], strict=True):
            code = _CODES[c].get(word)
            if code is None:
                assert r[c] == word and type(r[c]) is str, (r["id"], c)
            else:
                assert r[c] == code and type(r[c]) is int, (r["id"], c, r[c])
            assert label_word(c, r[c]) == word
    assert await _reports(path) == reports_before
    assert await _odd_log(path) == logs_before
    assert {d["id"]: (d["recipient_kind"], d["encoding"]) for d in logs_before} == {
        mid: (kind, enc) for mid, _, kind, enc, _ in _ROWS}
    assert _policy_reads(path) == policy_before
    indexes = {r["name"] for r in _rows(path, "PRAGMA index_list(messages)")}
    assert {"messages_created", "messages_number_sent", "messages_number_rule_sent",
            "messages_rare_state", "messages_pbx_created", "messages_unpruned",
            "messages_number", "messages_call", "messages_in_flight"} <= indexes


def _sent_since(path: Path, since: datetime) -> list[tuple[str, str, datetime]]:
    """What ``sent_since`` gives the rate counters, from the stored words (or codes)."""
    rows = _rows(path, f"SELECT {label_sql('recipient_kind')}, number,"
                 " COALESCE(submitted_at, created_at) FROM messages WHERE number IS NOT NULL"
                 " AND (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"
                 f" AND COALESCE(submitted_at, created_at) >= {micros(since)}")
    return sorted((r[0], r[1], from_micros(r[2])) for r in rows)


async def test_a_message_after_is_stored_coded_and_reads_the_same(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "new.db"
    t = END + timedelta(minutes=1)
    async with SqliteStore(path) as store:
        made = {}
        for i, (trigger, kind, encoding, category) in enumerate((
                (Trigger.CALL_COMPLETED, RecipientKind.CALLER, "GSM-7", "transactional"),
                (Trigger.CALL_CONNECTED, RecipientKind.AGENT, "UCS-2", "promotional"),
                (Trigger.CALL_COMPLETED, RecipientKind.FIXED, "UCS-2", "service"),
                (Trigger.CALL_CONNECTED, RecipientKind.AGENT, "binary", "otp"))):
            d = make_decision(call_id=f"c{i}", trigger=trigger, recipient=kind,
                              encoding=encoding, category=category)
            row, created = await store.insert_message(d, state=MessageState.QUEUED, now=t)
            assert created and (row.trigger, row.recipient_kind, row.encoding,
                                row.category) == (trigger, kind, encoding, category)
            assert row.idempotency_key == d.idempotency_key
            again, created = await store.insert_message(d, state=MessageState.QUEUED, now=t)
            assert not created and again == row  # the replay finds it by its digest
            assert await store.get_message(row.id) == row
            made[row.id] = (trigger.value, kind.value, encoding, category)
        agents = await store.policy_facts(make_decision().number or "", "r",
                                          sent_since=t - timedelta(hours=1), agents=True)
        assert agents.sent_to_number == 2
        assert sorted(k for k, _, _ in await store.sent_since(t - timedelta(hours=1))) == [
            "agent", "agent", "caller", "fixed"]
    stored = {id_word(r["id"]): tuple(r[c] for c in _LABELS)
              for r in _rows(path, "SELECT * FROM messages")}
    assert stored == {mid: tuple(_CODES[c].get(w, w) for c, w in zip(_LABELS, words, strict=True))
                      for mid, words in made.items()}
    async with ReportReader(path) as reader:
        log = {r["id"]: (r["recipient_kind"], r["encoding"])
               for r in await reader.log_page(MessageFilter(limit=None), unmasked=True)}
    assert log == {mid: (w[1], w[2]) for mid, w in made.items()}


def test_the_policy_reads_plan_as_before(tmp_path: Path, make_decision: MakeDecision) -> None:
    """The per-number count by audience searches messages_number_sent (which holds the kind,
    a code now) as the words' did, and the last send messages_number_rule_sent."""
    path = tmp_path / "v24.db"
    _v24_file(path, make_decision)
    sql, params = facts_query(FactsAsk("+919800000000", "r", END, True))
    words = sql.replace("(recipient_kind = 1)", "(recipient_kind = 'agent')")
    assert words != sql

    def plan(c: sqlite3.Connection, q: str) -> list[str]:
        return [r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {q}", params)]

    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        before = plan(c, words)
        migrate(c, VERSION - 1, LATEST_VERSION)
        after = plan(c, sql)
    assert after == before
    assert "SEARCH messages USING INDEX messages_number_sent (number=? AND <expr>>?)" in after
    assert "SEARCH messages USING INDEX messages_number_rule_sent (number=? AND rule=?)" in after
