"""A/B of the reads whose index schema 15 changed (the SMS log by status and its capped count,
the outbox's due rows, a count of all messages), on database files of any schema >= 14, each
query run on each file in turn, five rounds: medians in ms. Writes bench/results/state_index.json.

    .venv/bin/python bench/state_index.py OLD.db NEW.db
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from agent.models import MessageState as S  # noqa: E402
from agent.store.base import MessageFilter  # noqa: E402
from agent.store.smslog import LINK_BY_ID, LINK_BY_REF, log_sql, where  # noqa: E402
from agent.store.sqlite.messages import DUE_SQL, NEXT_DUE_SQL  # noqa: E402
from agent.store.sqlite.smslog import _RECEIVED_TEXT  # noqa: E402

# The schema 14 forms of the outbox's reads (before the index of states took its WHERE term).

OLD_DUE = ("SELECT * FROM messages WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?"
           " AND submitting_since IS NULL ORDER BY next_attempt_at LIMIT ?")
OLD_NEXT = ("SELECT MIN(next_attempt_at) FROM messages WHERE state IN ('queued', 'deferred')"
            " AND submitting_since IS NULL")



def queries(version: int) -> dict[str, tuple[str, object]]:
    rec = ("r.msg = m.ref", _RECEIVED_TEXT if version >= 16 else "r.received_at")
    link = {"link_of": LINK_BY_REF if version >= 24 else LINK_BY_ID}
    out = {}
    for st in (S.FAILED, S.UNDELIVERED, S.EXPIRED, S.AMBIGUOUS, S.DELIVERED, S.SUPPRESSED):
        f = MessageFilter(states=(st,), limit=100)
        out[f"page {st.value}"] = log_sql(f, *rec, **link)
        w, p = where(f)
        out[f"count {st.value}"] = (f"SELECT count(*) FROM (SELECT 1 FROM messages m{w} LIMIT ?) t", [*p, 10001])
    out["page all"] = log_sql(MessageFilter(limit=100), *rec, **link)
    out["due"] = (DUE_SQL if version >= 15 else OLD_DUE, ("2099-01-01", 100))
    out["next due"] = (NEXT_DUE_SQL if version >= 15 else OLD_NEXT, ())
    out["count all"] = ("SELECT count(*) FROM messages", ())
    return out

files = sys.argv[1:]
conns = [sqlite3.connect(f"file:{f}?mode=ro", uri=True) for f in files]
vers = [c.execute("PRAGMA user_version").fetchone()[0] for c in conns]
qs = [queries(v) for v in vers]
res = {k: [[] for _ in files] for k in qs[0]}
for rnd in range(5):
    for k in res:
        for i, c in enumerate(conns):
            sql, p = qs[i][k]
            t0 = time.perf_counter(); c.execute(sql, p).fetchall(); res[k][i].append(time.perf_counter() - t0)
print("query", *[f"v{v} ms" for v in vers], sep="\t")
out = {"files": files, "versions": vers, "median_ms": {}}
for k, ts in res.items():
    out["median_ms"][k] = [round(statistics.median(t) * 1000, 3) for t in ts]
    print(f"{k:<20}", *[f"{statistics.median(t)*1000:8.2f}" for t in ts], sep="\t")
(REPO / "bench" / "results" / "state_index.json").write_text(json.dumps(out, indent=2) + "\n")
