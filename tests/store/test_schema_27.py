"""Schema 27: retention ages a call by when it ended (one never ended, by when it was stored),
so the index of when each call was stored goes. A call that ended long ago but was stored
lately (recovered from the CDR after an outage) is pruned with its day; one stored long ago and
never ended (a lost Hangup) is pruned too; the dry run counts the same; a call with a message
still in flight stays; both reads search calls_ended_at."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent import retention
from agent.models import CallRecord, Disposition, MessageState
from agent.store.migrations import LATEST_VERSION
from agent.store.sqlite import SqliteStore
from agent.store.sqlite.retention import _CALL_IDS, _UNENDED_CALL_IDS
from agent.store.sqlite.synth import migrate
from tests.store.conftest import MakeDecision

VERSION = 27
NOW = datetime.now(UTC).replace(microsecond=0)
OLD, RECENT = NOW - timedelta(days=200), NOW - timedelta(days=3)
HORIZON = NOW - timedelta(days=180)


def _indexes(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as c:
        return {r[0] for r in c.execute("SELECT name FROM pragma_index_list('calls')")}


async def test_calls_age_from_their_end_and_the_stored_time_index_goes(
        tmp_path: Path, make_decision: MakeDecision) -> None:
    path = tmp_path / "v26.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, 0, VERSION - 1)
    assert "calls_created" in _indexes(path)
    async with SqliteStore(path) as store:
        calls = {  # call id: (ended at, stored at)
            "ended-old-stored-late": (OLD, RECENT),  # recovered from the CDR after an outage
            "never-ended-old": (None, OLD),  # a lost Hangup
            "never-ended-recent": (None, RECENT),
            "ended-recent": (RECENT, RECENT),
            "ended-old-in-flight": (OLD, OLD),  # its text still waits for a receipt
        }
        for call_id, (ended, stored) in calls.items():
            await store.save_call(CallRecord(call_id=call_id, caller="+919812345001",
                                             disposition=Disposition.ANSWERED, ended_at=ended),
                                  now=stored)
        await store.insert_message(make_decision(call_id="ended-old-in-flight"),
                                   state=MessageState.QUEUED, now=OLD)
        dry = await store.count_prunable(details_before=HORIZON, rows_before=None)
        assert dry.calls == 2
        done = await retention.prune(store, details_before=HORIZON, rows_before=None, batch=1,
                                     pause=0)
        assert done.calls == 2
        left = {c for c in calls if await store.get_call(c, pbx="default") is not None}
        assert left == {"never-ended-recent", "ended-recent", "ended-old-in-flight"}
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        for sql in (_CALL_IDS, _UNENDED_CALL_IDS):
            plan = " ".join(r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", (0, 10)))
            assert "SEARCH c USING INDEX calls_ended_at (ended_at" in plan, plan
    assert "calls_created" not in _indexes(path)
