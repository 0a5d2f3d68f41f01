"""After every AMI (re)login: adopt calls in progress and recover from the CDR the calls missed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from agent.ami.client import AmiClient
from agent.calls.tracker import CallTracker
from agent.loop.pipeline import RecordPipeline, spill, unspill
from agent.loop.reconcile import ReconcileResult, reconcile
from agent.metrics import Metrics
from agent.models import CallRecord
from agent.rules.loader import RuleSet
from agent.store.seams import CallLog

log = structlog.get_logger("aftercall.recovery")


class _Busy:
    """Calls not to recover from the CDR: in progress in the tracker, or in the pipeline."""

    def __init__(self, tracker: CallTracker, pending: set[str]) -> None:
        self._tracker, self._pending = tracker, pending

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._tracker or call_id in self._pending


class Recovery:
    """``on_login`` is the AMI client's login hook; ``ready`` is set after the first one."""

    def __init__(self, *, tracker: CallTracker, pipeline: RecordPipeline, store: CallLog,
                 metrics: Metrics, rules: Callable[[], RuleSet], cdr_csv: Path | None,
                 clock: Callable[[], datetime], spill_path: Path | None = None) -> None:
        self._tracker = tracker
        self._pipeline = pipeline
        self._store = store
        self._metrics = metrics
        self._rules = rules
        self._cdr_csv = cdr_csv
        self._clock = clock
        self.spill_path = spill_path
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconciling: asyncio.Task[None] | None = None
        # the gap (since when, the tracker's guesses) the next reconciliation covers
        self._next: tuple[datetime | None, list[CallRecord]] | None = None
        self.ready = asyncio.Event()

    async def on_login(self, client: AmiClient) -> None:
        """Adopt calls in progress, finish those that ended meanwhile, and recover from
        Asterisk's CDR the calls that ended while we were away."""
        if client.stats.logins > 1:
            self._metrics.ami_reconnected(self._tracker.pbx.name)
        channels = await client.core_show_channels()
        ended_unseen = self._tracker.resync(channels, now_ts=self._clock().timestamp())
        if self._cdr_csv is None:
            for record in ended_unseen:
                await self._pipeline.put(record)
        else:
            # Those calls ended while the link was down: their records guess at how (the
            # Hangup, the abandon, the talk time were not seen). Asterisk's CDR knows, so the
            # reconciliation handles them, and the guess serves only a call the CDR lacks.
            gap = client.stats.disconnected_at
            since = datetime.fromtimestamp(gap, UTC) if gap is not None else None
            # From the first call not yet stored, if that is earlier (the store's and the
            # pipeline's idempotency make the overlap harmless).
            oldest = self._pipeline.oldest_pending_end()
            if since is not None and oldest is not None:
                since = min(since, oldest)
            self.reconcile_soon(since, ended_unseen)
        self.ready.set()

    def reconcile_soon(self, since: datetime | None, fallback: list[CallRecord]) -> None:
        """One reconciliation at a time: a login while one runs (an overloaded agent whose
        link drops again and again) adds its gap to the next one instead of starting its own.
        Each holds the records of its whole gap until the pipeline takes them, so concurrent
        ones held the same calls many times over (seen: 90 MB to 780 MB within two minutes
        of an overloaded soak)."""
        if self._next is not None:
            was, more = self._next
            self._next = (None if since is None or was is None else min(since, was),
                          more + fallback)
            return
        self._next = (since, list(fallback))
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.create_task(self._reconcile_gaps(), name="cdr-reconcile")
            self._tasks.add(self._reconciling)
            self._reconciling.add_done_callback(self._tasks.discard)

    async def _reconcile_gaps(self) -> None:
        while self._next is not None:
            (since, fallback), self._next = self._next, None
            try:
                await self.reconcile_gap(since, fallback=fallback)
            except Exception:  # the next login tries again
                log.exception("cdr_reconcile_failed")

    async def reconcile_gap(self, gap_start: datetime | None = None,
                            fallback: list[CallRecord] | None = None) -> ReconcileResult:
        """Calls in the CDR that ended while the agent was away and that the store does not
        know go through the rules now. "Away" starts when the AMI connection was lost; after a
        restart, when the newest call in the store ended. A store that never ran starts from
        now: calls from before aftercall was installed are nobody's after-call SMS."""
        assert self._cdr_csv is not None
        now = self._clock()
        rules = self._rules()
        max_age = rules.defaults.max_age or timedelta(minutes=15)
        # This PBX's newest call: another PBX sharing the database says nothing of our gap.
        last = gap_start or await self._store.newest_call_end(self._tracker.pbx.name)
        # CDR times are whole seconds: step back a little so the boundary call is not missed
        # (the store's idempotency makes seeing it twice harmless).
        since = last - timedelta(seconds=2) if last else now
        return await reconcile(
            cdr_path=self._cdr_csv, store=self._store, handle_record=self._pipeline.put,
            since=since, now=now, max_age=max_age, region=rules.defaults.region,
            # The tracker's directory and pbx profile: the CDR's calls read as the live ones.
            agents=self._tracker.agents, pbx=self._tracker.pbx,
            in_progress=_Busy(self._tracker,
                              self._pipeline.pending_calls(self._tracker.pbx.name)),
            fallback=fallback or (),
        )

    async def resume_spilled(self) -> int:
        """At start: the records the last stop could not store go through the pipeline; the
        file goes once they are stored (a crash meanwhile leaves it for the next start)."""
        if self.spill_path is None:
            return 0
        records = await asyncio.to_thread(unspill, self.spill_path)
        if not records:
            return 0
        log.warning("records_resumed", count=len(records), path=str(self.spill_path))
        seqs = [await self._pipeline.put(r) for r in records]
        await self._pipeline.stored(seqs)
        await asyncio.to_thread(self.spill_path.unlink, missing_ok=True)
        return len(records)

    async def keep_unfinished(self, records: list[CallRecord]) -> None:
        """At a stop: records not stored in time are kept for ``resume_spilled``."""
        if not records:
            return
        if self.spill_path is None:
            log.error("records_not_kept", count=len(records),
                      detail="no file to keep them in; the CDR reconciliation recovers them")
            return
        before = await asyncio.to_thread(unspill, self.spill_path)  # a resume cut short
        seen = {(r.pbx, r.call_id) for r in records}
        keep = [r for r in before if (r.pbx, r.call_id) not in seen] + records
        await asyncio.to_thread(spill, self.spill_path, keep)
        log.warning("records_kept", count=len(keep), path=str(self.spill_path))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def spill_path(db: object) -> Path | None:
    """Where a stop keeps the records it could not store: beside a SQLite database file (a
    database URL has no "beside")."""
    return None if "://" in str(db) else Path(f"{db}.unstored-records.jsonl")
