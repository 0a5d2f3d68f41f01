"""Schema 24 (a tracked link names its message by ref, its time integer microseconds, the report
triggers on links and clicks finding the message so): a version 23 file with attributed and
unattributed links, several links on one message, links of a pruned row, clicks on each kind
and a link naming no message upgrades keeping every link as it resolved (the last one
unattributed), each ref and time the one its id and text said, the reports, SMS log and
rollups unchanged; links attributed, added and clicked after the upgrade, messages changed and
pruned, leave the rollups equal to a count of the rows; every read of links uses an index."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from agent import retention
from agent.models import MessageState
from agent.store.base import LinkRow, MessageFilter
from agent.store.migrations import LATEST_VERSION
from agent.store.packing import id_key, id_sql, micros
from agent.store.server_reports import fact_sql
from agent.store.smslog import LINK_BY_REF, log_sql
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.reports import ReportReader
from agent.store.sqlite.synth import migrate
from tests.store.conftest import MakeDecision
from tests.store.test_schema_13 import END, _reports, _rows
from tests.store.test_schema_21 import _v20_file
from tests.store.upgrades import rolled_and_exact

VERSION = 24
_ROLLUPS = ("report_daily", "report_hist", "report_slots", "report_replies")
# (code, message it names, created_at, clicks): beside the generator's links (one per linked
# message, some clicked)
_LINKS = (
    ("second1", "linked", "2026-11-29T10:00:00.999700Z", 2),  # a linked message's second link
    ("second2", "linked", "2026-11-29T23:59:59.999999Z", 0),
    ("st1link", "st1", "2026-11-29T10:00:00.000001Z", 1),
    ("pruned1", "st2", "2026-11-29T10:00:00.500000Z", 3),  # st2's text and number are pruned
    ("free1", None, "2026-11-30T00:00:00.000000Z", 1),  # not yet attributed
    ("free2", None, "2026-11-30T00:00:00.000001Z", 0),
    ("gone1", "no-such-message", "2026-11-29T10:00:00.000000Z", 1),
)


def _v23_file(path: Path, make_decision: MakeDecision) -> str:
    """Schema 21's test file at version 23 with ``_LINKS`` and their clicks; returns the
    linked message."""
    _v20_file(path, make_decision)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 20, VERSION - 1)
        (linked,) = conn.execute("SELECT message_id FROM links l JOIN clicks c ON c.code = l.code"
                                 " ORDER BY l.code LIMIT 1").fetchone()
        conn.execute("BEGIN")
        for code, mid, at, clicks in _LINKS:
            conn.execute("INSERT INTO links (code, message_id, url, created_at) VALUES (?,?,?,?)",
                         (code, linked if mid == "linked" else mid, f"https://x.in/{code}", at))
            for i in range(clicks):
                conn.execute("INSERT INTO clicks (code, at, user_agent) VALUES (?, ?, 'UA')",
                             (code, f"2026-11-30T01:00:0{i}.000000Z"))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION - 1
        return str(linked)


def _tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    return {t: [tuple(r) for r in _rows(path, f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4")]
            for t in _ROLLUPS}


async def _everything(path: Path) -> list[dict[str, object]]:
    """Every message's SMS log row (its clicks), as the API and exports give them."""
    async with ReportReader(path) as reader:
        return await reader.log_page(MessageFilter(limit=None), unmasked=True)


async def test_version_23_file_upgrades_keeping_every_link(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v23.db"
    _v23_file(path, make_decision)
    old = {r["code"]: r for r in _rows(path, "SELECT * FROM links")}
    assert len(old) > 100 and sum(r["message_id"] is None for r in old.values()) == 2
    assert _rows(path, "SELECT text FROM messages WHERE id = 'st2'")[0][0] is None
    refs = {r["id"]: r["ref"] for r in _rows(path, "SELECT id, ref FROM messages")}
    reports_before, rollups_before = await _reports(path), _tables(path)
    log_before = await _everything(path)
    assert sum(int(r["clicks"]) for r in log_before) > 10  # type: ignore[call-overload]

    async with SqliteStore(path) as store:
        for code, r in old.items():
            known = r["message_id"] in refs
            want = LinkRow(code, r["message_id"] if known else None, r["url"],
                           datetime.fromisoformat(r["created_at"]))
            assert await store.resolve_link(code) == want, code
    assert _rows(path, "PRAGMA user_version")[0][0] == LATEST_VERSION
    # Each link names its message's ref (NULL: none) and its time is the integer its text said.
    new = {r["code"]: r for r in _rows(path, "SELECT * FROM links")}
    assert new.keys() == old.keys()
    for code, r in new.items():
        was = old[code]
        assert r["msg"] == refs.get(was["message_id"]), code
        assert r["url"] == was["url"]
        assert r["created_at"] == micros(datetime.fromisoformat(was["created_at"])), code
        assert type(r["created_at"]) is int
    assert new["gone1"]["msg"] is None and new["free1"]["msg"] is None
    assert await _reports(path) == reports_before
    assert await _everything(path) == log_before
    assert _tables(path) == rollups_before
    (index,) = _rows(path, "SELECT sql FROM sqlite_schema WHERE name = 'links_message'")
    assert index[0].endswith("ON links(msg) WHERE msg IS NOT NULL")


async def test_rollups_counted_before_the_upgrade_add_up_with_links_and_clicks_after(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v23.db"
    linked = _v23_file(path, make_decision)
    t = END + timedelta(minutes=1)
    async with SqliteStore(path) as store:
        unlinked = [m.id for m in await store.list_messages(MessageFilter(
            states=(MessageState.DELIVERED,), limit=None))
            if not _rows(path, "SELECT 1 FROM links l JOIN messages m ON m.ref = l.msg"
                               f" WHERE m.id = '{m.id}'")][:6]
        # clicks on links from before: a linked message's, a second link's, a pruned row's
        for code in ("second2", "second1", "pruned1", "st1link", "free2"):
            await store.add_click(code, at=t)
        # new links on messages from before, one already linked, and their clicks
        await store.add_link("after1", "https://x.in/a", message_id=unlinked[0], now=t)
        await store.add_link("after2", "https://x.in/b", message_id=linked, now=t)
        await store.add_click("after1", at=t)
        await store.add_click("after2", at=t)
        # a linked message from before changes group: its links and clicks move with it
        assert await store.transition(linked, MessageState.FAILED, now=t, reason="test",
                                      from_states={MessageState.DELIVERED})
        # a new message, linked
        row, _ = await store.insert_message(make_decision(call_id="new-1"),
                                            state=MessageState.QUEUED, now=t)
        await store.add_link("after3", "https://x.in/c", message_id=row.id, now=t)
        await store.add_click("after3", at=t)
        await store.transition(row.id, MessageState.SUPPRESSED, now=t, reason="dnd")
    # links made before their message was known are attributed now: one clicked, to a message
    # without links, and one to a message that has one
    with closing(sqlite3.connect(path)) as c, c:
        for code, mid in (("free1", unlinked[1]), ("free2", linked)):
            c.execute("UPDATE links SET msg = (SELECT ref FROM messages WHERE id = ?)"
                      " WHERE code = ?", (id_key(mid), code))
    async with SqliteStore(path) as store:
        await store.add_click("free1", at=t)
        link = await store.resolve_link("free1")
        assert link is not None and link.message_id == unlinked[1]


    rolled, exact = await rolled_and_exact(path)
    assert rolled == exact
    assert rolled["links"] and all(v >= 0 for v in rolled["links"].values())  # type: ignore
    # Each message's clicks in the log are its links' clicks.
    log = {r["id"]: r["clicks"] for r in await _everything(path)}
    counted = dict(_rows(path, f"SELECT {id_sql('m.id')}, count(c.id) FROM messages m JOIN links l"
                               " ON l.msg = m.ref JOIN clicks c ON c.code = l.code GROUP BY m.id"))
    assert {k: v for k, v in log.items() if v} == counted
    assert counted[linked] >= 5 and counted[unlinked[1]] == 2

    # Retention deletes old rows with their links and clicks (the rollups keep them); a link
    # not attributed stays.
    before_prune = _tables(path)
    async with SqliteStore(path) as store:
        done = await retention.prune(store, details_before=END + timedelta(days=1),
                                     rows_before=END + timedelta(days=1), batch=400, pause=0)
    assert done.messages > 1000
    assert _tables(path) == before_prune
    left = {r[0]: r[1] for r in _rows(path, "SELECT code, msg FROM links")}
    assert left == {"gone1": None}
    assert [tuple(r) for r in _rows(path, "SELECT code FROM clicks")] == [("gone1",)]


def test_every_read_of_links_uses_an_index(tmp_path: Path, make_decision: MakeDecision) -> None:
    """The statements on links (resolve, attribute, the log's and the report's clicks, the
    triggers' reads, retention's deletes) find their rows by code or through links_message."""
    path = tmp_path / "v23.db"
    _v23_file(path, make_decision)
    with closing(sqlite3.connect(path)) as c:
        migrate(c, VERSION - 1, VERSION)
        page, p = log_sql(replace(MessageFilter(limit=50)), "r.msg = m.ref", link_of=LINK_BY_REF)
        ids = "(SELECT ref FROM messages WHERE id IN (?, ?))"
        statements = {
            "resolve": ("SELECT l.code, m.id, l.url, l.created_at FROM links l"
                        " LEFT JOIN messages m ON m.ref = l.msg WHERE l.code = ?", ["x"]),
            "attribute": ("UPDATE links SET msg = ? WHERE code = ?", [1, "x"]),
            "log page": (page, p),
            "report facts": (fact_sql(LINK_BY_REF) + " WHERE m.created_at >= ?", [0]),
            "others": ("SELECT 1 FROM links WHERE msg = ? AND code <> ?", [1, "x"]),
            "other clicks": ("SELECT 1 FROM clicks c JOIN links l ON l.code = c.code"
                             " WHERE l.msg = ? AND l.code <> ?", [1, "x"]),
            "click's message": ("SELECT msg FROM links WHERE code = ?", ["x"]),
            "clicks of": ("SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code"
                          " WHERE l.msg = (SELECT msg FROM links WHERE code = ?)", ["x"]),
            "prune clicks": (f"DELETE FROM clicks WHERE code IN (SELECT code FROM links"
                             f" WHERE msg IN {ids})", ["a", "b"]),
            "prune links": (f"DELETE FROM links WHERE msg IN {ids}", ["a", "b"]),
        }
        for name, (sql, params) in statements.items():
            plan = [r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            on_links = [s for s in plan if " l " in f" {s} " or "links" in s]
            assert on_links, (name, plan)
            assert not any(s.startswith("SCAN") for s in on_links), (name, plan)
            assert all("links_message" in s or "PRIMARY KEY" in s for s in on_links), (name, plan)
