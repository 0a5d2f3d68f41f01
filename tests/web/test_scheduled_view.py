"""Scheduled texts in the SMS log: stored as deferred (reason scheduled), shown as `scheduled`
with the time they are due, in /api/messages and the CSV export, on both stores."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import timedelta

from web_helpers import BASE, T0, MakeClient

from agent.models import MessageState
from agent.reports import export_messages
from agent.store.sqlite import SqliteStore


async def test_scheduled_rows_show_their_state_and_time(store: SqliteStore,
                                                       make_client: MakeClient) -> None:
    due = T0 + timedelta(minutes=30)
    night = T0 + timedelta(hours=9)
    for i, (reason, at) in enumerate([("scheduled", due), ("scheduled_unless_called_again", due),
                                      ("quiet_hours", night)]):
        d = replace(BASE, call_id=f"s{i}", rule=f"r{i}")
        await store.insert_message(d, state=MessageState.DEFERRED, now=T0, reason=reason,
                                   next_attempt_at=at)
    await store.insert_message(replace(BASE, call_id="q", rule="now"),
                               state=MessageState.QUEUED, now=T0, next_attempt_at=T0)
    client = await make_client(timezone="Asia/Kolkata")
    rows = {m["rule"]: m for m in (await (await client.get("/api/messages")).json())["messages"]}
    assert (rows["r0"]["status"], rows["r0"]["reason"]) == ("scheduled", "scheduled")
    assert rows["r1"]["status"] == "scheduled"
    assert rows["r2"]["status"] == "deferred"  # quiet hours: deferred, with when it goes
    for rule, at in (("r0", due), ("r1", due), ("r2", night)):
        assert rows[rule]["scheduled_for"] is not None
        assert rows[rule]["scheduled_for"].replace("Z", "+00:00")[:19] == at.isoformat()[:19]
    assert rows["now"]["scheduled_for"] is None
    # Filtering by the stored state finds both kinds of deferred rows.
    deferred = (await (await client.get("/api/messages?status=deferred")).json())["messages"]
    assert {m["rule"] for m in deferred} == {"r0", "r1", "r2"}
    text = await export_messages(store, None, "csv", timezone="Asia/Kolkata")
    exported = {r["rule"]: r for r in csv.DictReader(io.StringIO(text))}
    assert exported["r0"]["status"] == "scheduled"
    assert exported["r0"]["scheduled_for_local"].endswith("+05:30")
