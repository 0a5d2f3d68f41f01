"""The rate-limit facts one decision needs: the window scan the policy used to run per decision
(the peer, same SQLite file, same run) against what it uses now (the store lookup, with the
number's own count in its per-number window, plus the in-memory global and daily counters), on a
store holding ``--messages`` sent texts within a day.

    .venv/bin/python bench/policy.py [--messages 13000] [--decisions 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.models import Decision, MessageState, RecipientKind, Trigger  # noqa: E402
from agent.sms.policy import Limits  # noqa: E402
from agent.sms.ratecount import SendCounters  # noqa: E402
from agent.store.packing import micros  # noqa: E402
from agent.store.sqlite import SqliteStore  # noqa: E402

_SENT = "(submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"
# The query every decision ran before the counters (per-number 1 h and global 1 day windows).
OLD_SCAN = (
    "SELECT EXISTS(SELECT 1 FROM opt_outs WHERE number = :n),"
    " EXISTS(SELECT 1 FROM dnd WHERE number = :n),"
    " (SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages"
    f"   WHERE number = :n AND rule = :r AND {_SENT}),"
    f" (SELECT COUNT(*) FROM messages WHERE number = :n AND {_SENT}"
    "   AND (created_at >= :ns OR submitted_at >= :ns)),"
    f" (SELECT COUNT(*) FROM messages WHERE {_SENT}"
    "   AND (created_at >= :gs OR submitted_at >= :gs))"
)
BASE = Decision(call_id="c", rule="missed-call-sorry", trigger=Trigger.CALL_COMPLETED,
                recipient=RecipientKind.CALLER, number="+919800000000", template="t",
                gateway="smsc", sender_id="ACMECO", text="Sorry we missed your call.")


def ts(t: datetime) -> int:
    """A time as the store keeps a message's: integer microseconds (schema 19)."""
    return micros(t)


async def fill(store: SqliteStore, n: int, now: datetime, numbers: list[str]) -> None:
    rng = random.Random(1)
    batch = []
    for i in range(n):
        at = now - timedelta(seconds=rng.uniform(0, 86_000))
        d = replace(BASE, call_id=f"c{i}", number=rng.choice(numbers))
        batch.append(store.insert_message(d, state=MessageState.QUEUED, now=at,
                                          next_attempt_at=at))
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)


async def main(n_messages: int, n_decisions: int) -> dict[str, float]:
    now = datetime.now(UTC)
    numbers = [f"+9198{i:08d}" for i in range(5000)]
    limits = Limits.parse(per_number="3/1h", global_="100000/1d", daily="100000/1d")
    with tempfile.TemporaryDirectory() as tmp:
        async with SqliteStore(Path(tmp) / "bench.db") as store:
            await fill(store, n_messages, now, numbers)
            rng = random.Random(2)
            picks = [rng.choice(numbers) for _ in range(n_decisions)]

            old: list[float] = []
            for number in picks:
                t = time.perf_counter()
                await store._read(OLD_SCAN, {  # noqa: SLF001 - the peer is the old raw query
                    "n": number, "r": BASE.rule, "ns": ts(now - timedelta(hours=1)),
                    "gs": ts(now - timedelta(days=1))})
                old.append((time.perf_counter() - t) * 1000)

            t = time.perf_counter()
            counters = SendCounters(limits)
            counters.seed(await store.sent_since(now - limits.longest_window))
            seed_ms = (time.perf_counter() - t) * 1000
            new: list[float] = []
            for number in picks:
                t = time.perf_counter()
                facts = await store.policy_facts(number, BASE.rule,
                                                 sent_since=now - timedelta(hours=1))
                counters.counts(RecipientKind.CALLER, number, now, facts.sent_to_number)
                new.append((time.perf_counter() - t) * 1000)
    out = {
        "messages": n_messages,
        "decisions": n_decisions,
        "window_scan_ms_p50": statistics.median(old),
        "window_scan_ms_mean": statistics.fmean(old),
        "counters_ms_p50": statistics.median(new),
        "counters_ms_mean": statistics.fmean(new),
        "seed_ms_once_at_start": seed_ms,
    }
    out["speedup_mean"] = out["window_scan_ms_mean"] / out["counters_ms_mean"]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=13_000)
    ap.add_argument("--decisions", type=int, default=500)
    a = ap.parse_args()
    res = asyncio.run(main(a.messages, a.decisions))
    for k, v in res.items():
        print(f"{k:28} {v:.3f}" if isinstance(v, float) else f"{k:28} {v}")
    out = REPO / "bench/results/policy.json"
    out.write_text(json.dumps({"run_at": datetime.now(UTC).isoformat(), **res}, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
