"""SMS pumping with the shipped defaults: a burst of missed calls from premium and international
ranges through the real rules, dispatcher and SQLite store (issue #19, finding 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.dispatch import Dispatcher
from agent.metrics import Metrics
from agent.models import CallRecord, Direction, Disposition, MessageState, Trigger
from agent.rules.engine import decide
from agent.rules.loader import RuleSet, load_rules
from agent.store.sqlite import SqliteStore

# No rate_limits and no allowed_countries: what an operator gets without asking.
RULES = """\
version: 1
defaults: {region: IN, timezone: Asia/Kolkata, sender_id: ACMECO, gateway: smsc,
           dlt_entity_id: "1101456789012345678"}
agents:
  "2001": {name: Priya, mobile: "+919812345678"}
templates:
  sorry: {text: "Sorry we missed your call. -ACME", dlt_template_id: "1107161234567890125"}
  summary: {text: "Call from {{ caller }}", dlt_template_id: "1107161234567890126"}
rules:
  - name: missed-call-sorry
    match: {disposition: [missed]}
    send: {to: caller, template: sorry}
  - name: agent-summary
    on: call_connected
    send: {to: agent, template: summary}
gateways:
  smsc: {type: smpp, host: 127.0.0.1, system_id: x}
"""
# The ranges seen in pumping attacks: Thuraya satellite, Nigeria, Guyana, Gambia, Iraq, UK
# personal numbers.
# Valid numbers whose last three digits vary.
PREMIUM = ["+882161234", "+2348031234", "+5922231", "+2207012", "+9647701234", "+447012345"]
NOW = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load_rules(path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "a.db") as s:
        yield s


def missed(i: int, caller: str) -> CallRecord:
    return CallRecord(
        call_id=f"17000.{i}", caller=caller, direction=Direction.INBOUND,
        disposition=Disposition.MISSED, ended_at=NOW, started_at=NOW - timedelta(seconds=20))


def premium_number(i: int) -> str:
    return PREMIUM[i % len(PREMIUM)] + f"{i:03d}"


async def feed(rules: RuleSet, disp: Dispatcher, records: list[CallRecord]) -> list[str]:
    reasons = []
    for r in records:
        for row in await disp.handle(decide(rules, r, now=NOW), call=r):
            reasons.append(row.reason if row.state is MessageState.SUPPRESSED else "queued")
    return reasons


async def test_premium_burst_is_refused_by_country_with_an_alarm(
    rules: RuleSet, store: SqliteStore
) -> None:
    metrics = Metrics()
    disp = Dispatcher(store, {}, limits=rules.defaults.limits(), clock=lambda: NOW,
                      metrics=metrics)
    calls = [missed(i, premium_number(i)) for i in range(150)]
    with capture_logs() as logs:
        reasons = await feed(rules, disp, calls)
    assert reasons.count("queued") == 0
    assert set(reasons) == {"country_not_allowed"}, set(reasons)
    bursts = [e for e in logs if e["event"] == "sms_refusal_burst"]
    assert len(bursts) == 1 and bursts[0]["reason"] == "country_not_allowed"
    text = metrics.render()[0].decode()
    assert 'aftercall_sms_refusal_bursts_total{reason="country_not_allowed"} 1.0' in text
    assert 'aftercall_sms_refusal_burst{reason="country_not_allowed"} 1.0' in text


async def test_domestic_burst_is_capped_and_agents_still_get_texts(
    rules: RuleSet, store: SqliteStore
) -> None:
    disp = Dispatcher(store, {}, limits=rules.defaults.limits(), clock=lambda: NOW)
    callers = [missed(i, f"+9198{i:08d}") for i in range(150)]
    reasons = await feed(rules, disp, callers)
    assert reasons.count("queued") == 100  # the default global limit for callers: 100/1m
    assert reasons.count("rate_limited") == 50
    # The callers' budget is spent; an agent's summary is counted apart and still goes.
    connected = CallRecord(call_id="17000.999", trigger=Trigger.CALL_CONNECTED,
                           caller="+919900000001", agent="2001",
                           agent_number="+919812345678", started_at=NOW)
    assert await feed(rules, disp, [connected]) == ["queued"]

    # A restart counts what the store holds: the limit still holds for the next caller.
    again = Dispatcher(store, {}, limits=rules.defaults.limits(), clock=lambda: NOW)
    assert await feed(rules, again, [missed(1000, "+919911111111")]) == ["rate_limited"]
    later = Dispatcher(store, {}, limits=rules.defaults.limits(),
                       clock=lambda: NOW + timedelta(minutes=2))
    assert await feed(rules, later, [missed(1001, "+919922222222")]) == ["queued"]


async def test_repeat_caller_is_held_to_the_per_number_default(
    rules: RuleSet, store: SqliteStore
) -> None:
    disp = Dispatcher(store, {}, limits=rules.defaults.limits(), clock=lambda: NOW)
    reasons = await feed(rules, disp, [missed(i, "+919812300000") for i in range(6)])
    assert reasons == ["queued"] * 3 + ["rate_limited"] * 3
