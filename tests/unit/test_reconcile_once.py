"""An agent whose AMI link drops again and again (overloaded: Asterisk drops a reader that
falls behind) runs one CDR reconciliation at a time: each holds every record of its gap until
the pipeline takes them, and one per login held the same calls many times over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.loop.recovery import Recovery
from agent.models import CallRecord

T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


class Gaps(Recovery):
    """The scheduling under test; each reconciliation itself is the seam (it waits for the
    test to let it finish, as one waits for a full pipeline)."""

    def __init__(self) -> None:
        super().__init__(tracker=None, pipeline=None, store=None, metrics=None,  # type: ignore[arg-type]
                         rules=lambda: None, cdr_csv=Path("Master.csv"),  # type: ignore[arg-type, return-value]
                         clock=lambda: T0)
        self.running = 0
        self.most = 0
        self.runs: list[tuple[datetime | None, list[str]]] = []
        self.go = asyncio.Event()

    async def reconcile_gap(self, gap_start: datetime | None = None,  # type: ignore[override]
                            fallback: list[CallRecord] | None = None) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.runs.append((gap_start, [r.call_id for r in fallback or ()]))
        try:
            await self.go.wait()
        finally:
            self.running -= 1


async def test_logins_during_a_reconciliation_wait_for_it_and_share_the_next_one() -> None:
    r = Gaps()
    r.reconcile_soon(T0, [CallRecord(call_id="a")])
    await asyncio.sleep(0)
    for i in range(1, 20):  # the link drops and comes back while the first one runs
        r.reconcile_soon(T0 + timedelta(seconds=i), [CallRecord(call_id=f"b{i}")])
        await asyncio.sleep(0)
    r.reconcile_soon(T0 - timedelta(seconds=5), [])  # an older first pending record
    assert r.runs == [(T0, ["a"])] and r.most == 1
    r.go.set()
    for _ in range(10):
        await asyncio.sleep(0)
    # one more, from the earliest of the gaps, with every guess of those logins
    assert r.runs[1] == (T0 - timedelta(seconds=5), [f"b{i}" for i in range(1, 20)])
    assert len(r.runs) == 2 and r.most == 1
    await r.close()
    # later logins start a new one
    r.reconcile_soon(None, [])
    await asyncio.sleep(0)
    assert r.runs[-1] == (None, []) and len(r.runs) == 3
    await r.close()


async def test_a_failed_reconciliation_does_not_stop_the_next() -> None:
    class Failing(Gaps):
        async def reconcile_gap(self, gap_start: datetime | None = None,  # type: ignore[override]
                                fallback: list[CallRecord] | None = None) -> None:
            self.runs.append((gap_start, []))
            if len(self.runs) == 1:
                await asyncio.sleep(0)
                raise OSError("Master.csv: permission denied")

    r = Failing()
    r.reconcile_soon(T0, [])
    await asyncio.sleep(0)  # it started
    r.reconcile_soon(T0 + timedelta(seconds=1), [])
    for _ in range(10):
        await asyncio.sleep(0)
    assert [s for s, _ in r.runs] == [T0, T0 + timedelta(seconds=1)]
    await r.close()
