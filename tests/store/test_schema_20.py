"""Schema 20 (a judgement's list of rule names stored once, each judgement deflated with them):
a version 19 file with judgements in calls rows and in rule_outcomes, of lists of rule names
many enough that their ids take more than one byte, upgrades keeping what the calls view
explains of every call, each list of names stored once."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

from agent.models import RuleOutcome, Trigger
from agent.store.packing import micros, names_id
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.calls import pack_outcomes, unpack_outcomes
from agent.store.sqlite.synth import migrate
from tests.store.test_schema_18 import END, _as_stored_v17, _rows, _v17_file


def _v19_file(path: Path) -> None:
    """The schema 18 test's calls, and 300 judgements of calls not stored, each of its own
    list of rule names (one with names outside ASCII)."""
    _v17_file(path)
    rng = random.Random(19)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 17, 19)
        conn.execute("BEGIN")
        for i in range(300):
            outcomes = [RuleOutcome(f"règle-{i}-{k} “x”", rng.random() < 0.5,
                                    rng.choice([None, "rule is disabled (enabled: false)"]))
                        for k in range(1 + i % 3)]
            conn.execute("INSERT INTO rule_outcomes (call_id, pbx, trigger, outcomes, decided_at)"
                         " VALUES (?, 'default', 'call_completed', ?, ?)",
                         (f"unjudged.{i}", pack_outcomes(outcomes), micros(END)))
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 19


async def test_version_19_file_upgrades_keeping_every_judgement(tmp_path: Path) -> None:
    path = tmp_path / "v19.db"
    _v19_file(path)
    _, outcomes, _ = _as_stored_v17(path)  # rule_outcomes as schema 19 left it
    in_rows = {(r["call_id"], r["pbx"]): r["outcomes"]
               for r in _rows(path, "SELECT call_id, pbx, outcomes FROM calls"
                                    " WHERE outcomes IS NOT NULL")}
    assert len(in_rows) > 300 and len(outcomes) > 400
    async with SqliteStore(path) as store:
        expected = {}
        for key in {*in_rows, *outcomes}:
            expected[key] = await store.rule_outcomes(key[0], pbx=key[1])
    # The same, read from what schema 19 stored, before the upgrade: calls rows then the table.
    for key, blob in in_rows.items():
        connected = [o for o in outcomes.get(key, []) if o.trigger is Trigger.CALL_CONNECTED]
        assert expected[key] == connected + unpack_outcomes(blob, Trigger.CALL_COMPLETED), key
    for key, want in outcomes.items():
        if key not in in_rows:
            assert expected[key] == want, key
    # Every judgement is in form 3, each list of names stored once, some ids past one byte.
    blobs = [r[0] for r in _rows(path, "SELECT outcomes FROM calls WHERE outcomes IS NOT NULL"
                                       " UNION ALL SELECT outcomes FROM rule_outcomes")]
    ids = [names_id(b) for b in blobs]
    assert None not in ids and max(i[0] for i in ids if i) > 127
    names = _rows(path, "SELECT names FROM rule_names")
    assert len(names) == len({n[0] for n in names}) == 300 + 3
    after = [r[0] for r in _rows(path, "SELECT outcomes FROM calls WHERE outcomes IS NOT NULL")]
    assert sum(map(len, after)) < 0.8 * sum(map(len, in_rows.values()))
    # The agent's next judgements list the stored names, or add their own list once.
    async with SqliteStore(path) as store:
        key = next(iter(in_rows))
        same = [RuleOutcome(o.rule, not o.matched, None, (), Trigger.CALL_COMPLETED)
                for o in expected[key] if o.trigger is Trigger.CALL_COMPLETED]
        await store.record_rule_outcomes(key[0], Trigger.CALL_COMPLETED, same, now=END,
                                         pbx=key[1])
        new = [RuleOutcome("brand-new", True, trigger=Trigger.CALL_CONNECTED)]
        for n in range(2):
            await store.record_rule_outcomes(f"later.{n}", Trigger.CALL_CONNECTED, new, now=END,
                                             pbx="default")
        got = await store.rule_outcomes(key[0], pbx=key[1])
        assert [o for o in got if o.trigger is Trigger.CALL_COMPLETED] == same
        assert await store.rule_outcomes("later.1", pbx="default") == new
    assert len(_rows(path, "SELECT names FROM rule_names")) == 300 + 3 + 1
