"""The dispatcher on a real SQLite file and a real PostgreSQL database, with an in-test fake
gateway (the seam)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.dispatch import Dispatcher, RetryPolicy, mask_number
from agent.errors import (
    ConfigError,
    GatewayAmbiguousError,
    GatewayPermanentError,
    GatewayTemporaryError,
)
from agent.gateways.base import InboundHandler, ReceiptHandler
from agent.models import (
    CallRecord,
    Decision,
    MessageState,
    OutboundSms,
    Receipt,
    ReceiptState,
    RecipientKind,
    SubmitResult,
    SuppressReason,
)
from agent.sms.policy import AudienceLimits, Limits, parse_rate
from agent.store.base import MessageRow
from agent.store.sqlite import SqliteStore

MakeDecision = Callable[..., Decision]
FAST = RetryPolicy(initial=0.01, max_backoff=0.05, jitter=0.1, max_attempts=5)
WAIT = 5.0  # seconds: a bound for awaiting events, never a synchronisation sleep


@dataclass
class FakeGateway:
    """Scripted gateway: each submit pops the next outcome (an exception to raise, or None for
    success); ``hold`` keeps submits in flight until set."""

    name: str
    script: list[BaseException | None] = field(default_factory=list)
    healthy: bool = True
    window: int = 4
    hold: asyncio.Event | None = None
    calls: list[OutboundSms] = field(default_factory=list)
    accepted: list[OutboundSms] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        return None

    async def close(self) -> None:
        return None

    async def wait_ready(self, timeout: float) -> None:
        return None  # like HTTP: nothing to wait for, the submit is the probe

    async def submit(self, sms: OutboundSms) -> SubmitResult:
        self.calls.append(sms)
        self.changed.set()
        if self.hold is not None:
            await self.hold.wait()
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.accepted.append(sms)
        self.changed.set()
        n = len(self.accepted)
        return SubmitResult(sms.message_id, (f"{self.name}-{n}",), 1)

    async def wait_calls(self, n: int) -> None:
        async def until() -> None:
            while len(self.calls) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), WAIT)


async def wait_state(store: SqliteStore, message_id: str, *states: MessageState) -> MessageRow:
    """Poll the row (the store is the thing observed) until it reaches one of ``states``."""

    async def until() -> MessageRow:
        while True:
            row = await store.get_message(message_id)
            assert row is not None
            if row.state in states and row.submitting_since is None:
                return row
            await asyncio.sleep(0.005)

    return await asyncio.wait_for(until(), WAIT)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Dispatcher], asyncio.Task[None]]]:
    started: list[tuple[Dispatcher, asyncio.Task[None]]] = []

    def start(d: Dispatcher) -> asyncio.Task[None]:
        task = asyncio.create_task(d.run())
        started.append((d, task))
        return task

    yield start
    for d, task in started:
        if not task.done():
            await d.stop(timeout=1.0)
            await asyncio.wait_for(task, WAIT)


def dispatcher(store: SqliteStore, *gws: FakeGateway, **kw: object) -> Dispatcher:
    kw.setdefault("retry", FAST)
    kw.setdefault("poll_interval", 0.05)
    return Dispatcher(store, {g.name: g for g in gws}, **kw)  # type: ignore[arg-type]


async def test_queued_decision_is_submitted_with_latency_and_masked_logs(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    d = dispatcher(store, gw)
    running(d)
    with capture_logs() as logs:
        [row] = await d.handle([make_decision()])
        assert row.state is MessageState.QUEUED
        done = await wait_state(store, row.id, MessageState.SUBMITTED)
        # The line is logged after the row is written: the poll above may see the row first.
        async def logged() -> None:
            while not any(e["event"] == "sms_submitted" for e in logs):
                await asyncio.sleep(0.005)

        await asyncio.wait_for(logged(), WAIT)
    assert done.smsc_ids == ("smsc-1",) and done.attempts == 1
    assert done.hangup_to_submit_ms is not None and 0 <= done.hangup_to_submit_ms < 5000
    assert [s.to for s in gw.accepted] == ["+919812345678"]
    events = {e["event"]: e for e in logs}
    assert {"sms_queued", "sms_submitted"} <= set(events)
    assert events["sms_submitted"]["to"] == "+91******5678"
    assert all("+919812345678" not in str(e) for e in logs)


async def test_temporary_errors_back_off_then_exactly_one_success(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway(
        "smsc",
        script=[
            GatewayTemporaryError("throttled", code=0x58, reason="throttled"),
            GatewayTemporaryError("queue full", code=0x14, reason="queue_full"),
        ],
    )
    d = dispatcher(store, gw, retry=RetryPolicy(initial=0.05, max_backoff=1.0, jitter=0.0))
    running(d)
    [row] = await d.handle([make_decision()])
    done = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert done.attempts == 3 and len(gw.calls) == 3 and len(gw.accepted) == 1
    events = await store.message_events(row.id)
    retries = [e for e in events if e.reason == "retry"]
    assert len(retries) == 2
    # The second wait is twice the first (no jitter): 0.05 s then 0.1 s, as scheduled in the row.
    submits = [e.at for e in events if e.reason == "submitting"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(submits)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1


def test_backoff_is_capped_and_jittered() -> None:
    p = RetryPolicy(initial=1, max_backoff=30, multiplier=2, jitter=0.2)
    assert [p.delay(n, lambda: 1.0) for n in (1, 2, 3, 6, 20)] == [1, 2, 4, 30, 30]
    assert p.delay(3, lambda: 0.0) == pytest.approx(3.2)  # jitter comes off the top ...
    assert p.delay(20, lambda: 0.0) == pytest.approx(24)  # ... so the cap stays a cap


async def test_permanent_failure_is_final_with_reason_and_code(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway(
        "smsc", script=[GatewayPermanentError("bad dest", code=0x0B, reason="invalid_destination")]
    )
    disp = dispatcher(store, gw)
    running(disp)
    [row] = await disp.handle([make_decision()])
    failed = await wait_state(store, row.id, MessageState.FAILED)
    assert (failed.reason, failed.error_code) == ("invalid_destination", "11")
    assert len(gw.calls) == 1


async def test_retries_exhausted_fail_the_message(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc", script=[GatewayTemporaryError("down") for _ in range(3)])
    disp = dispatcher(store, gw, retry=RetryPolicy(initial=0.01, max_backoff=0.02, max_attempts=3))
    running(disp)
    [row] = await disp.handle([make_decision()])
    failed = await wait_state(store, row.id, MessageState.FAILED)
    assert failed.reason == "retries_exhausted" and failed.attempts == 3 and gw.accepted == []


async def test_retry_past_expiry_expires(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc", script=[GatewayTemporaryError("down")])
    disp = dispatcher(
        store, gw, retry=RetryPolicy(initial=60, jitter=0), expiry=timedelta(seconds=30)
    )
    running(disp)
    [row] = await disp.handle([make_decision()])
    expired = await wait_state(store, row.id, MessageState.EXPIRED)
    assert expired.reason == "expiry" and len(gw.calls) == 1


@pytest.mark.sqlite_only  # the SQLite writer's grouping
async def test_call_record_and_its_rows_are_recorded_in_one_commit(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    call = CallRecord(call_id="1700.1", caller="+919812345678", ended_at=datetime.now(UTC))
    disp = dispatcher(store, FakeGateway("smsc"))
    commits = store.commits
    rows = await disp.handle([make_decision(call_id="1700.1"),
                              make_decision(call_id="1700.1", rule="other")], call=call)
    assert await store.get_call("1700.1", pbx="default") == call
    assert [r.call_id for r in rows] == ["1700.1", "1700.1"]
    # The call and all its rows: one transaction, one fsync before the submit.
    assert store.commits - commits == 1
    # No decision: the call alone.
    await disp.handle([], call=replace(call, call_id="1700.2"))
    assert await store.get_call("1700.2", pbx="default") is not None


async def test_gateway_unreachable_does_not_exhaust_attempts_and_retries_soon(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    # Ten "not bound" failures against max_attempts=3: the SMSC never saw the message, so the
    # outage is bounded by expiry, not by attempts, and retries stay within the short cap.
    down = [GatewayTemporaryError("not bound", reason="not_bound") for _ in range(10)]
    gw = FakeGateway("smsc", script=down)
    policy = RetryPolicy(initial=0.01, max_backoff=300, max_attempts=3,
                         unavailable_max_backoff=0.02)
    disp = dispatcher(store, gw, retry=policy)
    running(disp)
    [row] = await disp.handle([make_decision()])
    sent = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert sent.attempts == 11 and len(gw.accepted) == 1


@dataclass
class ReconnectingGateway(FakeGateway):
    """An SMPP-like gateway that is not bound until ``bound`` is set."""

    bound: asyncio.Event = field(default_factory=asyncio.Event)
    waits: int = 0

    async def wait_ready(self, timeout: float) -> None:
        self.waits += 1
        try:
            await asyncio.wait_for(self.bound.wait(), timeout)
        except TimeoutError:
            raise GatewayTemporaryError("not bound", reason="connect_failed") from None
        self.healthy = True


async def test_row_is_not_claimed_while_the_gateway_reconnects(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = ReconnectingGateway("smsc", healthy=False)
    policy = RetryPolicy(initial=0.01, unavailable_max_backoff=0.02, max_attempts=2)
    disp = dispatcher(store, gw, retry=policy, ready_wait=0.02)
    running(disp)
    [row] = await disp.handle([make_decision()])

    async def waited(n: int) -> None:
        while gw.waits < n:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(waited(4), WAIT)
    # Never claimed: a crash now would leave it queued (resent), not ambiguous.
    now = await store.get_message(row.id)
    assert now is not None and now.state is MessageState.QUEUED
    assert now.attempts == 0 and now.submitting_since is None and gw.calls == []
    gw.bound.set()
    sent = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert sent.attempts == 1 and len(gw.accepted) == 1


async def test_queued_message_expires_when_its_call_is_max_age_old(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    ended = datetime.now(UTC) - timedelta(seconds=50)
    gw = FakeGateway("smsc", script=[GatewayTemporaryError("not bound", reason="not_bound")])
    policy = RetryPolicy(initial=30.0, unavailable_max_backoff=30.0, jitter=0)
    disp = dispatcher(store, gw, retry=policy)
    running(disp)
    [row] = await disp.handle([make_decision(call_ended_at=ended, max_age_seconds=60.0)])
    assert row.expires_at == ended + timedelta(seconds=60)  # not now + the 1 h default
    expired = await wait_state(store, row.id, MessageState.EXPIRED)
    assert expired.reason == "expiry" and gw.accepted == []


async def test_ambiguous_is_never_resent(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc", script=[GatewayAmbiguousError("timeout after send", reason="timeout")])
    disp = dispatcher(store, gw)
    running(disp)
    [row] = await disp.handle([make_decision()])
    amb = await wait_state(store, row.id, MessageState.AMBIGUOUS)
    assert amb.reason == "timeout"
    # The worker stays alive and sends the next message; the ambiguous one is not tried again.
    [other] = await disp.handle([make_decision(call_id="next")])
    await wait_state(store, other.id, MessageState.SUBMITTED)
    assert [s.message_id for s in gw.calls] == [row.id, other.id]


async def test_fails_over_to_backup_on_temporary_error(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    primary = FakeGateway(
        "smsc", script=[GatewayTemporaryError("bind lost", reason="connection_lost")]
    )
    backup = FakeGateway("kannel")
    disp = dispatcher(
        store, primary, backup, backups={"smsc": "kannel"}, retry=RetryPolicy(initial=60, jitter=0)
    )  # only an immediate failover fits
    running(disp)
    [row] = await disp.handle([make_decision()])
    done = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert done.gateway == "kannel" and done.smsc_ids == ("kannel-1",)
    assert len(primary.calls) == 1 and len(backup.accepted) == 1
    assert any(e.reason == "failover" for e in await store.message_events(row.id))


async def test_a_failed_over_row_is_forgotten_once_it_is_out(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """The rows switched to the backup are remembered (so a retry is not made at once again)
    only until they leave the outbox: kept forever, an outage of the primary grew the set by
    every text it carried, and each send copies it."""
    primary = FakeGateway("smsc", script=[
        GatewayTemporaryError("bind lost", reason="connection_lost") for _ in range(4)])
    backup = FakeGateway("kannel")
    disp = dispatcher(
        store, primary, backup, backups={"smsc": "kannel"}, retry=RetryPolicy(initial=60, jitter=0)
    )
    running(disp)
    rows = await disp.handle([make_decision(call_id=f"c{i}") for i in range(4)])
    for row in rows:
        done = await wait_state(store, row.id, MessageState.SUBMITTED)
        assert done.gateway == "kannel"
    assert disp._sender._failed_over == set()  # what it keeps in memory


async def test_a_stale_read_of_a_failed_over_row_goes_to_the_backup(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """The outbox loop may hold a read of a row from before another worker failed it over to
    the backup: sending from that read must not put the row back on the primary."""
    primary = FakeGateway("smsc")
    backup = FakeGateway("kannel")
    disp = dispatcher(store, primary, backup, backups={"smsc": "kannel"})
    [row] = await disp.handle([make_decision()])  # the loop is not running: the row waits
    stale = await store.get_message(row.id)
    assert stale is not None and stale.gateway == "smsc"
    await store.transition(  # what the worker that saw the primary fail does
        row.id, MessageState.QUEUED, now=datetime.now(UTC), reason="failover",
        gateway="kannel", from_states={MessageState.QUEUED},
    )
    await disp._sender.send(stale)
    assert primary.calls == []
    running(disp)
    done = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert done.gateway == "kannel" and done.smsc_ids == ("kannel-1",)
    assert primary.calls == [] and len(backup.accepted) == 1


async def test_unhealthy_primary_routes_straight_to_backup(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    primary = FakeGateway("smsc", healthy=False)
    backup = FakeGateway("kannel")
    disp = dispatcher(store, primary, backup, backups={"smsc": "kannel"})
    running(disp)
    [row] = await disp.handle([make_decision()])
    done = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert done.gateway == "kannel" and primary.calls == []


def test_backup_naming_an_unknown_gateway_is_a_config_error(store: SqliteStore) -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        Dispatcher(store, {"smsc": FakeGateway("smsc")}, backups={"smsc": "nope"})


async def test_restart_resumes_outbox_and_marks_in_flight_ambiguous(
    open_store: Callable[[], SqliteStore], make_decision: MakeDecision
) -> None:
    hold = asyncio.Event()
    gw1 = FakeGateway("smsc", hold=hold)
    store1 = await open_store().open()
    d1 = dispatcher(store1, gw1)
    task = asyncio.create_task(d1.run())
    [stuck] = await d1.handle([make_decision(call_id="in-flight")])
    await gw1.wait_calls(1)
    # Not yet picked up by anyone: written to the outbox only.
    waiting, _ = await store1.insert_message(
        make_decision(call_id="waiting"),
        state=MessageState.QUEUED,
        now=datetime.now(UTC),
        next_attempt_at=datetime.now(UTC),
    )
    task.cancel()  # the agent dies mid-submit: no stop(), no response recorded
    with pytest.raises(asyncio.CancelledError):
        await task
    for t in list(d1._in_flight.values()):  # the crash takes these too
        t.cancel()
    await asyncio.gather(*d1._in_flight.values(), return_exceptions=True)
    await store1.close()

    async with open_store() as store2:
        gw2 = FakeGateway("smsc")
        d2 = dispatcher(store2, gw2)
        task2 = asyncio.create_task(d2.run())
        try:
            resumed = await wait_state(store2, waiting.id, MessageState.SUBMITTED)
            amb = await wait_state(store2, stuck.id, MessageState.AMBIGUOUS)
        finally:
            await d2.stop(1.0)
            await asyncio.wait_for(task2, WAIT)
    assert resumed.smsc_ids == ("smsc-1",)
    assert amb.reason == "interrupted" and amb.attempts == 1
    assert [s.message_id for s in gw2.calls] == [waiting.id]


async def test_two_dispatchers_on_one_file_send_once(
    open_store: Callable[[], SqliteStore], make_decision: MakeDecision
) -> None:
    gw_a, gw_b = FakeGateway("smsc"), FakeGateway("smsc")
    async with open_store() as sa, open_store() as sb:
        da, db = dispatcher(sa, gw_a), dispatcher(sb, gw_b)
        tasks = [asyncio.create_task(da.run()), asyncio.create_task(db.run())]
        try:
            decision = make_decision()
            rows_a, rows_b = await asyncio.gather(da.handle([decision]), db.handle([decision]))
            assert rows_a[0].id == rows_b[0].id
            await wait_state(sa, rows_a[0].id, MessageState.SUBMITTED)
            # A replay of the same call later must not text anyone again either.
            [again] = await db.handle([decision])
            assert again.id == rows_a[0].id and again.state is MessageState.SUBMITTED
        finally:
            for d in (da, db):
                await d.stop(1.0)
            await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        assert len(gw_a.calls) + len(gw_b.calls) == 1
        assert len(await sa.list_messages()) == 1


async def test_receipts_update_rows(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    disp = dispatcher(store, gw)
    running(disp)
    [row] = await disp.handle([make_decision()])
    await wait_state(store, row.id, MessageState.SUBMITTED)
    with capture_logs() as logs:
        out = await disp.on_receipt(
            Receipt(gateway="smsc", state=ReceiptState.DELIVERED, smsc_id="smsc-1")
        )
        dup = await disp.on_receipt(
            Receipt(gateway="smsc", state=ReceiptState.DELIVERED, smsc_id="smsc-1")
        )
        unknown = await disp.on_receipt(
            Receipt(gateway="smsc", state=ReceiptState.DELIVERED, smsc_id="who")
        )
    assert out.changed and out.message is not None and out.message.state is MessageState.DELIVERED
    assert dup.duplicate and unknown.message is None
    # Only the receipts' own lines: the running outbox loop may log in the same window.
    assert [e["event"] for e in logs if e["event"].startswith("receipt")] == [
        "receipt_received"
    ] * 3
    assert (await store.get_message(row.id)).final_at is not None  # type: ignore[union-attr]


async def test_every_decision_is_a_row_and_policies_use_store_facts(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    disp = dispatcher(store, gw, limits=Limits.parse(per_number="2/1h"))
    running(disp)
    await store.opt_out("+15550000001", source="reply:STOP")
    await store.add_dnd(["+15550000002"], source="test")
    rows = await disp.handle(
        [
            make_decision(call_id="a", cooldown_seconds=3600),
            make_decision(call_id="b", cooldown_seconds=3600),  # same number+rule: cooldown
            make_decision(call_id="c", rule="other"),  # 2nd to the number within the hour: allowed
            make_decision(call_id="d", rule="third"),  # 3rd: rate limited
            make_decision(call_id="e", number="+15550000001"),
            make_decision(call_id="f", number="+15550000002", category="promotional"),
            make_decision(
                call_id="g",
                number=None,
                suppress=SuppressReason.INVALID_NUMBER,
                detail="'12' is not a phone number",
            ),
        ]
    )
    got = [(r.state, r.reason) for r in rows]
    assert got == [
        (MessageState.QUEUED, None),
        (MessageState.SUPPRESSED, "cooldown"),
        (MessageState.QUEUED, None),
        (MessageState.SUPPRESSED, "rate_limited"),
        (MessageState.SUPPRESSED, "opt_out"),
        (MessageState.SUPPRESSED, "dnd"),
        (MessageState.SUPPRESSED, "invalid_number"),
    ]
    for r in rows:
        if r.state is MessageState.QUEUED:
            await wait_state(store, r.id, MessageState.SUBMITTED)
    assert len(gw.accepted) == 2


async def test_per_number_limit_counts_what_the_store_holds_per_audience(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    """The per-number count is the store's, not a window per number kept in memory (one per
    number texted within the span: it grew with every new caller): a second agent on the same
    database (or the same after a restart) counts the first one's texts, agents and callers
    apart, the window slides, and no number stays in memory once its rows are written."""
    now = datetime.now(UTC)
    clock = [now]
    limits = replace(Limits.parse(per_number="2/1h"),
                     agents=AudienceLimits(per_number=parse_rate("1/1h")))
    one = dispatcher(store, limits=limits, clock=lambda: clock[0])
    two = dispatcher(store, limits=limits, clock=lambda: clock[0])

    async def state(d: Dispatcher, call: str, **kw: object) -> str:
        [row] = await d.handle([make_decision(call_id=call, call_ended_at=clock[0], **kw)])
        return row.reason or row.state.value

    assert await state(one, "a") == "queued"
    assert await state(two, "b") == "queued"
    assert await state(one, "c") == "rate_limited"  # its own memory saw one text, not two
    agent = {"recipient": RecipientKind.AGENT, "rule": "agent-summary"}
    assert await state(two, "d", **agent) == "queued"  # agents are counted apart
    assert await state(one, "e", **agent) == "rate_limited"
    clock[0] = now + timedelta(hours=1, seconds=1)
    assert await state(one, "f") == "queued"
    assert one._intake._counters is not None  # what it keeps in memory
    assert one._intake._counters.tracked_numbers() == 0


@pytest.mark.parametrize("setting", ["", "  dnd: {transactional: send}\n",
                                     "  dnd: {transactional: suppress}\n"])
async def test_dnd_transactional_exception_from_rules_yaml(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object],
    setting: str,
) -> None:
    """rules.yaml's defaults.dnd reaches the dispatcher: a transactional text to a DND number
    is sent only with ``transactional: send``; promotional and service ones never are."""
    from agent.rules.loader import load_rules_text

    rs = load_rules_text(
        "version: 1\ndefaults:\n  region: US\n  sender_id: ACME\n  gateway: smsc\n"
        "  allowed_countries: [any]\n" + setting
        + "templates: {t: {text: hi}}\nrules: [{name: r, send: {template: t}}]\n"
        "gateways: {smsc: {type: smpp, host: h, system_id: x}}\n", "r.yaml", {})
    gw = FakeGateway("smsc")
    running(disp := dispatcher(store, gw, limits=rs.defaults.limits()))
    await store.add_dnd(["+15550000002"], source="test")
    rows = await disp.handle([
        make_decision(call_id=c, number="+15550000002", category=c)
        for c in ("transactional", "service", "promotional")])
    sent = "send" in setting
    assert [(r.state, r.reason) for r in rows] == [
        (MessageState.QUEUED, None) if sent else (MessageState.SUPPRESSED, "dnd"),
        (MessageState.SUPPRESSED, "dnd"), (MessageState.SUPPRESSED, "dnd")]
    if sent:
        await wait_state(store, rows[0].id, MessageState.SUBMITTED)
        assert [m.to for m in gw.accepted] == ["+15550000002"]


async def test_scheduled_rows_wait_and_a_newer_answered_call_cancels_them(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """A text due later is a deferred row with its time; cancel_scheduled (a newer answered
    call) suppresses those that asked for it, not the calling call's own, not the others. The
    same call id on another PBX is another call: its scheduled text is cancelled too."""
    now = datetime.now(UTC)
    gw = FakeGateway("smsc")
    running(disp := dispatcher(store, gw))
    due = now + timedelta(minutes=30)
    rows = await disp.handle([
        make_decision(call_id="a", not_before=due, unless_called_again=True),
        make_decision(call_id="b", rule="plain", not_before=due),
        make_decision(call_id="c", rule="own", not_before=due, unless_called_again=True),
        make_decision(call_id="c", rule="own", not_before=due, unless_called_again=True,
                      pbx="blr"),
    ])
    assert [(r.state, r.reason, r.next_attempt_at) for r in rows] == [
        (MessageState.DEFERRED, "scheduled_unless_called_again", due),
        (MessageState.DEFERRED, "scheduled", due),
        (MessageState.DEFERRED, "scheduled_unless_called_again", due),
        (MessageState.DEFERRED, "scheduled_unless_called_again", due)]
    assert sorted(await disp.cancel_scheduled(rows[0].number or "", "c", now, pbx="default")
                  ) == sorted([rows[0].id, rows[3].id])
    after = {(r.pbx, r.call_id): (r.state, r.reason) for r in await store.list_messages()}
    assert after == {("default", "a"): (MessageState.SUPPRESSED, "called_again"),
                     ("default", "b"): (MessageState.DEFERRED, "scheduled"),
                     ("default", "c"): (MessageState.DEFERRED, "scheduled_unless_called_again"),
                     ("blr", "c"): (MessageState.SUPPRESSED, "called_again")}
    assert gw.calls == []


async def test_dry_run_sends_nothing(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    gw = FakeGateway("smsc")
    disp = dispatcher(store, gw, dry_run=True)
    running(disp)
    [row] = await disp.handle([make_decision()])
    assert (row.state, row.reason) == (MessageState.SUPPRESSED, "dry_run")
    assert gw.calls == []


async def test_deferred_message_is_sent_when_quiet_hours_end(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    now = [datetime(2024, 5, 1, 22, 30, tzinfo=UTC)]
    gw = FakeGateway("smsc")
    disp = dispatcher(store, gw, clock=lambda: now[0])
    running(disp)
    decision = make_decision(
        quiet_hours=("21:00", "09:00", "defer"), timezone="UTC", call_ended_at=now[0]
    )
    [row] = await disp.handle([decision])
    assert row.state is MessageState.DEFERRED
    assert row.next_attempt_at == datetime(2024, 5, 2, 9, 0, tzinfo=UTC)
    # A message that is due now goes out; the worker has looked at the outbox, and left the
    # deferred one alone.
    [other] = await disp.handle([make_decision(call_id="daytime", number="+15551234567")])
    await wait_state(store, other.id, MessageState.SUBMITTED)
    assert [s.message_id for s in gw.calls] == [other.id]
    now[0] = datetime(2024, 5, 2, 9, 0, 1, tzinfo=UTC)
    disp.wake()
    done = await wait_state(store, row.id, MessageState.SUBMITTED)
    assert len(gw.accepted) == 2 and done.queued_at == now[0]


async def test_deferred_message_to_a_number_that_opted_out_meanwhile_is_suppressed(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    now = [datetime(2024, 5, 1, 22, 30, tzinfo=UTC)]
    gw = FakeGateway("smsc")
    disp = dispatcher(store, gw, clock=lambda: now[0])
    running(disp)
    [row] = await disp.handle(
        [make_decision(quiet_hours=("21:00", "09:00", "defer"), call_ended_at=now[0])]
    )
    await store.opt_out("+919812345678", source="reply:STOP")
    now[0] = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
    disp.wake()
    out = await wait_state(store, row.id, MessageState.SUPPRESSED)
    assert out.reason == "opt_out" and gw.calls == []


async def test_stop_lets_the_in_flight_submit_finish(
    store: SqliteStore, make_decision: MakeDecision
) -> None:
    hold = asyncio.Event()
    gw = FakeGateway("smsc", hold=hold)
    disp = dispatcher(store, gw)
    task = asyncio.create_task(disp.run())
    await disp.handle([make_decision()])
    await gw.wait_calls(1)
    stopping = asyncio.create_task(disp.stop(timeout=WAIT))
    await asyncio.sleep(0)
    hold.set()  # the in-flight submit completes inside the bound
    await asyncio.wait_for(stopping, WAIT)
    await asyncio.wait_for(task, WAIT)
    [row] = await store.list_messages()
    assert row.state is MessageState.SUBMITTED


def test_mask_number() -> None:
    assert mask_number("+919812345678") == "+91******5678"
    assert mask_number("5678") == "****"
    assert mask_number(None) == "-"


async def test_operator_resends_or_drops_ambiguous_messages(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object],
    capsys: pytest.CaptureFixture[str], db_arg: str,
) -> None:
    """`aftercall ambiguous list|resend|drop`: the agent never guesses; the operator does."""
    from agent.cli import build_parser, execute

    now = datetime.now(UTC)
    ids = []
    for rule in ("a", "b", "c"):
        row, _ = await store.insert_message(make_decision(rule=rule), state=MessageState.QUEUED,
                                            now=now, next_attempt_at=now)
        await store.claim_for_submit(row.id, now=now)  # then the agent died mid-submit
        ids.append(row.id)
    assert len(await store.recover_in_flight(now=now)) == 3
    parser = build_parser()

    def cli(*argv: str) -> int:
        args = parser.parse_args(["ambiguous", "--db", db_arg, *argv])
        return execute(args)

    assert await asyncio.to_thread(cli, "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(ids)
    assert await asyncio.to_thread(cli, "resend", ids[0]) == 0
    assert await asyncio.to_thread(cli, "drop", ids[1]) == 0
    # Only ambiguous rows take a verdict: twice, or an unknown id, is refused and named.
    assert await asyncio.to_thread(cli, "resend", ids[0], "nope") == 1
    err = capsys.readouterr().err
    assert f"{ids[0]}: no ambiguous message" in err and "nope: no ambiguous message" in err

    gw = FakeGateway("smsc")
    running(dispatcher(store, gw))
    sent = await wait_state(store, ids[0], MessageState.SUBMITTED)
    assert sent.attempts == 2  # the interrupted one, and the resend
    dropped = await store.get_message(ids[1])
    assert dropped is not None and (dropped.state, dropped.reason) == (
        MessageState.FAILED, "operator_dropped")
    still = await store.get_message(ids[2])
    assert still is not None and still.state is MessageState.AMBIGUOUS
    assert [m.message_id for m in gw.calls] == [ids[0]]
    events = [e.reason for e in await store.message_events(ids[0])]
    assert "interrupted" in events and "operator_resend" in events


async def test_metrics_follow_the_message(
    store: SqliteStore, make_decision: MakeDecision, running: Callable[[Dispatcher], object]
) -> None:
    """Submit time per gateway, hangup -> submit, and every state a row enters after intake."""
    from agent.metrics import Metrics

    metrics = Metrics()
    disp = dispatcher(store, FakeGateway("smsc"), metrics=metrics)
    running(disp)
    [row] = await disp.handle([make_decision()])
    sent = await wait_state(store, row.id, MessageState.SUBMITTED)
    await disp.on_receipt(Receipt(gateway="smsc", smsc_id=sent.smsc_ids[0],
                                  state=ReceiptState.DELIVERED))
    text = metrics.render()[0].decode()
    assert "aftercall_hangup_to_submit_seconds_count 1.0" in text
    assert 'aftercall_gateway_submit_seconds_count{gateway="smsc"} 1.0' in text
    assert 'aftercall_messages_total{reason="",state="submitted"} 1.0' in text
    assert 'aftercall_messages_total{reason="receipt",state="delivered"} 1.0' in text
