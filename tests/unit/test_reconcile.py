"""Reconciliation from the lab's real Master.csv into a real SQLite store in tmp_path."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.calls.cdr_rows import SOURCE_VAR
from agent.errors import ConfigError
from agent.loop.reconcile import ReconcileResult, reconcile
from agent.models import CallRecord, Disposition, Trigger
from agent.store.sqlite import SqliteStore

MASTER = Path(__file__).resolve().parents[1] / "fixtures" / "cdr" / "Master.csv"
AGENTS = {"2001": ("Priya S", "+919812345678")}
FIRST_END = datetime(2026, 11, 29, 7, 29, 44, tzinfo=UTC)  # the earliest call's end
LAST_END = datetime(2026, 11, 29, 7, 34, 53, tzinfo=UTC)
BEFORE_ALL = FIRST_END - timedelta(minutes=1)
ALL_CALLS = 34


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "aftercall.db") as s:
        yield s


@pytest.fixture
def cdr(tmp_path: Path) -> Path:
    path = tmp_path / "Master.csv"
    shutil.copy(MASTER, path)
    return path


class Handler:
    """What the app's handler does that matters here: run the rules, then save the call."""

    def __init__(self, store: SqliteStore, *, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.store = store
        self.fail = set(fail)
        self.seen: list[CallRecord] = []

    async def __call__(self, rec: CallRecord) -> None:
        self.seen.append(rec)
        if rec.call_id in self.fail:
            raise RuntimeError("rules blew up")
        await self.store.save_call(rec)


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


async def run(cdr: Path, store: SqliteStore, handler: Handler, **kw: object) -> ReconcileResult:
    args: dict[str, object] = {
        "cdr_path": cdr, "store": store, "handle_record": handler, "since": BEFORE_ALL,
        "now": LAST_END + timedelta(minutes=1), "max_age": timedelta(minutes=15), "region": "IN",
        "agents": AGENTS,
    }
    args.update(kw)
    return await reconcile(**args)  # type: ignore[arg-type]


async def test_unknown_calls_are_handed_over_once_and_known_ones_skipped(
    cdr: Path, store: SqliteStore
) -> None:
    # The live path completed two calls before the agent went away.
    live = {"aftercall-lab-1795937383.0", "aftercall-lab-1795937508.22"}
    for call_id in live:
        await store.save_call(CallRecord(call_id=call_id, caller="+919876543210"))
    handler = Handler(store)
    first = await run(cdr, store, handler)
    assert first == ReconcileResult(seen=ALL_CALLS, already_known=2, handled=ALL_CALLS - 2)
    ids = [r.call_id for r in handler.seen]
    assert len(ids) == len(set(ids)) == ALL_CALLS - 2 and not live & set(ids)
    ends = [r.ended_at for r in handler.seen if r.ended_at is not None]
    assert len(ends) == len(handler.seen)
    assert ends == sorted(ends)  # oldest first
    assert all(r.vars[SOURCE_VAR] == "cdr" for r in handler.seen)
    saved = await store.get_call("aftercall-lab-1795937525.32", pbx="default")
    assert saved is not None and (saved.queue, saved.agent, saved.agent_number) == (
        "Support", "2001", "+919812345678")

    # Reconnect, run again: the handler saved every call, so nothing is handed over twice.
    second = await run(cdr, store, handler)
    assert second == ReconcileResult(seen=ALL_CALLS, already_known=ALL_CALLS)
    assert len(handler.seen) == ALL_CALLS - 2


async def test_only_calls_that_ended_after_since(cdr: Path, store: SqliteStore) -> None:
    handler = Handler(store)
    since = datetime(2026, 11, 29, 7, 34, 47, tzinfo=UTC)
    result = await run(cdr, store, handler, since=since)
    # Calls ending at :48, :50, :52, the four ended by the lab's stop at :53, and the two
    # recorded at 08:57 (after the userfield lines went into the dialplan), and the two at 15:27
    # (callers who left a greeting and a queue nobody rang in). The row of the long
    # call that *started* at 07:29:44 is read even though it began long before.
    assert result.seen == result.handled == 11
    assert all(r.ended_at is not None and r.ended_at > since for r in handler.seen)
    assert "aftercall-lab-1795937384.2" in {r.call_id for r in handler.seen}


async def test_calls_older_than_max_age_are_handed_over_and_counted(
    cdr: Path, store: SqliteStore
) -> None:
    handler = Handler(store)
    now = datetime(2026, 11, 29, 7, 45, 0, tzinfo=UTC)
    result = await run(cdr, store, handler, now=now, max_age=timedelta(minutes=12))
    cutoff = now - timedelta(minutes=12)  # 07:33:00
    old = [r for r in handler.seen if r.ended_at is not None and r.ended_at < cutoff]
    assert result.handled == ALL_CALLS and result.too_old == len(old) == 18


async def test_a_failing_handler_is_counted_and_retried_next_time(
    cdr: Path, store: SqliteStore
) -> None:
    bad = "aftercall-lab-1795937531.36"
    handler = Handler(store, fail={bad})
    with capture_logs() as logs:
        first = await run(cdr, store, handler)
    assert (first.handled, first.failed) == (ALL_CALLS - 1, 1)
    assert any(e["event"] == "cdr_call_failed" and e["call_id"] == bad for e in logs)
    handler.fail.clear()
    second = await run(cdr, store, handler)
    assert (second.handled, second.already_known) == (1, ALL_CALLS - 1)
    assert handler.seen[-1].call_id == bad


async def test_calls_still_tracked_live_are_left_to_the_tracker(
    cdr: Path, store: SqliteStore
) -> None:
    handler = Handler(store)
    live = {"aftercall-lab-1795937693.58"}
    result = await run(cdr, store, handler, in_progress=live)
    assert (result.in_progress, result.handled) == (1, ALL_CALLS - 1)
    assert live.isdisjoint(r.call_id for r in handler.seen)


async def test_malformed_lines_are_skipped_and_logged(cdr: Path, store: SqliteStore) -> None:
    append(cdr, '"acme","+919876543210","s"\n')
    handler = Handler(store)
    with capture_logs() as logs:
        result = await run(cdr, store, handler)
    assert result.malformed == 1 and result.handled == ALL_CALLS
    [skip] = [e for e in logs if e["event"] == "cdr_row_skipped"]
    assert skip["line"] == 42 and "expected 21 columns" in skip["reason"]
    [done] = [e for e in logs if e["event"] == "cdr_reconciled"]
    assert done["handled"] == ALL_CALLS and done["malformed"] == 1


async def test_missing_file_is_not_an_error_and_unreadable_is(
    tmp_path: Path, store: SqliteStore
) -> None:
    handler = Handler(store)
    with capture_logs() as logs:
        result = await run(tmp_path / "nope.csv", store, handler)
    assert result == ReconcileResult() and handler.seen == []
    assert [e["event"] for e in logs] == ["cdr_file_missing"]
    with pytest.raises(ConfigError, match="cannot read the CDR file"):
        await run(tmp_path, store, handler)  # a directory


async def test_naive_datetimes_are_refused(cdr: Path, store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await run(cdr, store, Handler(store), since=datetime(2026, 11, 29))


async def test_the_file_is_read_off_the_event_loop(
    cdr: Path, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.loop.reconcile as mod

    threads: list[int] = []
    real = mod.read_cdr

    def spy(*a: object, **kw: object) -> object:
        threads.append(threading.get_ident())
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mod, "read_cdr", spy)
    await run(cdr, store, Handler(store))
    loop_thread = threading.get_ident()
    assert threads and threads[0] != loop_thread
    assert asyncio.get_running_loop().is_running()


async def test_a_call_stored_only_as_connected_is_still_completed_from_the_cdr(
    cdr: Path, store: SqliteStore
) -> None:
    # kill -9 between the on-connect SMS (the call_connected snapshot is stored with it) and
    # the hangup: the restart must still complete that call from Asterisk's CDR row.
    call_id = "aftercall-lab-1795937525.32"
    connected = CallRecord(call_id=call_id, trigger=Trigger.CALL_CONNECTED,
                           caller="+919876543211", queue="Support", agent="2001")
    await store.save_call(connected, now=FIRST_END)
    # The gap starts at the connected call (the store's newest fact), not "from now".
    assert await store.newest_call_end() == FIRST_END
    handler = Handler(store)
    result = await run(cdr, store, handler)
    assert result.handled == ALL_CALLS and result.already_known == 0
    done = await store.get_call(call_id, pbx="default")
    assert done is not None and done.trigger is Trigger.CALL_COMPLETED
    assert (done.disposition, done.agent) == (Disposition.ANSWERED, "2001")
    # Completed now: the next reconciliation leaves it alone.
    again = await run(cdr, store, handler)
    assert again.already_known == ALL_CALLS


def _old_calls(n: int, before: datetime) -> str:
    """``n`` copies of the fixture's calls, each with its own linkedid and uniqueids, ending
    in the hour before ``before``: a busy PBX's lookback."""
    import csv
    import io

    from agent.calls.cdr_rows import CDR_COLUMNS
    rows = list(csv.reader(MASTER.read_text().splitlines()))
    col = {c: i for i, c in enumerate(CDR_COLUMNS)}
    out = io.StringIO()
    w = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for k in range(n):
        ends_at = before - timedelta(minutes=59) + timedelta(seconds=k * 3000 / n)
        for r in rows:
            r = list(r)
            for c in ("uniqueid", "linkedid"):
                r[col[c]] = f"{r[col[c]]}-old{k}"
            shift = ends_at - datetime.fromisoformat(r[col["end"]]).replace(tzinfo=UTC)
            for c in ("start", "answer", "end"):
                if r[col[c]]:
                    t = datetime.fromisoformat(r[col[c]]).replace(tzinfo=UTC) + shift
                    r[col[c]] = t.strftime("%Y-%m-%d %H:%M:%S")
            w.writerow(r)
    return out.getvalue()


async def test_memory_holds_the_gap_s_calls_not_the_whole_lookback(
        tmp_path: Path, store: SqliteStore) -> None:
    """Each reconnect reads the CDR back over the lookback (4 hours): on a busy PBX that is
    tens of thousands of calls, of which only the gap's are wanted. Reading many old calls
    must cost about what reading a few does, and recover the same gap."""
    import tracemalloc

    async def peak(old: int) -> tuple[int, ReconcileResult]:
        path = tmp_path / f"Master-{old}.csv"
        path.write_text(_old_calls(old, BEFORE_ALL) + MASTER.read_text())
        async with SqliteStore(tmp_path / f"s-{old}.db") as s:
            tracemalloc.start()
            try:
                result = await run(path, s, Handler(s), since=BEFORE_ALL)
                return tracemalloc.get_traced_memory()[1], result
            finally:
                tracemalloc.stop()

    few_peak, few = await peak(5)
    many_peak, many = await peak(150)  # ~5,000 calls in the lookback
    assert few.handled == many.handled == ALL_CALLS
    assert many_peak < 2 * few_peak, (few_peak, many_peak)
