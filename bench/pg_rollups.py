"""What PostgreSQL's report rollups cost the write path: the same message lifecycle (insert,
claim, submit, delivery receipt), 300 messages at a time, on two databases of one throwaway
cluster, one with the rollup triggers and one with them disabled (the peer), alternating rounds;
then how long one fold of everything written takes.

    .venv/bin/python bench/pg_rollups.py [--rounds 6] [--batch 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.lab.postgres import TempCluster  # noqa: E402
from agent.logs import setup_logging  # noqa: E402
from agent.models import (  # noqa: E402
    Decision,
    MessageState,
    Receipt,
    ReceiptState,
    RecipientKind,
    Trigger,
)
from agent.store.postgres import PostgresStore  # noqa: E402

BASE = Decision(call_id="x", rule="support-followup", trigger=Trigger.CALL_COMPLETED,
                recipient=RecipientKind.CALLER, number="+919812345678",
                template="support_ticket", gateway="smsc", sender_id="ACMECO",
                text="Hi Asha, your ticket #42 is logged.")


async def lifecycle(store: PostgresStore, key: str, i: int) -> None:
    at = datetime.now(UTC)
    d = replace(BASE, call_id=key, number=f"+9198{i:08d}", call_ended_at=at)
    row, _ = await store.insert_message(d, state=MessageState.QUEUED, now=at, next_attempt_at=at)
    await store.claim_for_submit(row.id, now=at)
    await store.record_submit(row.id, gateway="smsc", smsc_ids=[f"S-{key}"], now=at,
                              hangup_to_submit_ms=10.0)
    await store.apply_receipt(Receipt(gateway="smsc", state=ReceiptState.DELIVERED,
                                      smsc_id=f"S-{key}", done_at=at), now=at)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=300, help="messages in flight at once")
    args = ap.parse_args()
    setup_logging("error")
    rates: dict[str, list[float]] = {"rollups": [], "no_triggers": []}
    with tempfile.TemporaryDirectory() as tmp, \
            TempCluster.under(Path(tmp) / "pg", durable=True) as pg:
        stores = {"rollups": PostgresStore(pg.create_database("rollups")),
                  "no_triggers": PostgresStore(pg.create_database("peer"))}
        for s in stores.values():
            await s.open()
        for trigger in ("report_message_inserted", "report_message_updated"):
            await stores["no_triggers"]._read(f"ALTER TABLE messages DISABLE TRIGGER {trigger}")
        for r in range(args.rounds):
            order = list(stores) if r % 2 == 0 else list(reversed(stores))
            for name in order:
                t = time.perf_counter()
                await asyncio.gather(*(lifecycle(stores[name], f"{name}-{r}-{i}", i)
                                       for i in range(args.batch)))
                rates[name].append(args.batch / (time.perf_counter() - t))
        t = time.perf_counter()
        folded = await stores["rollups"].fold_reports()
        fold_ms = (time.perf_counter() - t) * 1000
        for s in stores.values():
            await s.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f})",
        "what": "messages/s through insert, claim, submit and receipt (durable cluster)",
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "median": {k: round(v, 1) for k, v in med.items()},
        "ratio_rollups_vs_no_triggers": round(med["rollups"] / med["no_triggers"], 2),
        "fold": {"changes": folded, "ms": round(fold_ms, 1)},
    }
    print(json.dumps(out, indent=2))
    (REPO / "bench/results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench/results/pg_rollups.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
