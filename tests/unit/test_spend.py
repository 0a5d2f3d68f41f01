"""Spend control: prices per gateway and prefix, day/month totals in the local zone, caps per
rule and for all texts, and the agent suppressing (spend_cap) and showing it on /metrics."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from agent.errors import RulesError
from agent.models import (
    CallRecord,
    Decision,
    Direction,
    Disposition,
    MessageState,
    RecipientKind,
    SuppressReason,
    Trigger,
)
from agent.rules.loader import load_rules_text
from agent.sms.policy import Limits, evaluate
from agent.sms.spend import Caps, SpendCounters, SpendPolicy, Spent

D = Decimal
NOW = datetime(2025, 8, 31, 18, 0, tzinfo=UTC)  # 23:30 on the 31st in Kolkata
POLICY = SpendPolicy.build({"smsc": {"default": D("0.20"), "+91": D("0.12"),
                                     "+9198": D("0.10")}},
                           currency="INR", fallback=D("0.50"), caps=Caps(D("1.00"), D("5")),
                           timezone="Asia/Kolkata")
BASE = Decision(call_id="1", rule="r", trigger=Trigger.CALL_COMPLETED,
                recipient=RecipientKind.CALLER, number="+919812345678", template="t",
                gateway="smsc", sender_id="ACMECO", text="hi", segments=2)


def test_the_longest_prefix_then_the_gateway_default_then_the_fallback() -> None:
    assert POLICY.price("smsc", "+919812345678") == D("0.10")
    assert POLICY.price("smsc", "+917012345678") == D("0.12")
    assert POLICY.price("smsc", "+447400123456") == D("0.20")
    assert POLICY.price("backup", "+919812345678") == D("0.50")
    assert POLICY.cost("smsc", "+919812345678", 3) == D("0.30")
    assert SpendPolicy().cost("smsc", "+91", 1) is None and not SpendPolicy().active


def test_totals_follow_the_local_day_and_month() -> None:
    c = SpendCounters("Asia/Kolkata")
    c.seed([("r", D("0.40"), NOW), ("other", D("0.10"), NOW - timedelta(hours=1))])
    assert c.spent("r", NOW) == Spent(D("0.40"), D("0.40"), D("0.50"), D("0.50"))
    # 30 minutes later it is 1 September in Kolkata (still 31 August in UTC): all new
    later = NOW + timedelta(minutes=31)
    assert c.spent("r", later) == Spent()
    c.add("r", D("0.10"), later)
    c.discard("r", D("0.10"), later)
    assert c.totals(later) == Spent()


def run(d: Decision, spent: Spent) -> tuple[str, SuppressReason | None, str | None]:
    out = evaluate(d, now=NOW, opted_out=False, dnd=False, last_sent_at=None,
                   limits=Limits(spend=POLICY), dry_run=False, spent=spent)
    return out.action, out.reason, out.detail


def test_a_text_that_would_pass_a_cap_is_suppressed() -> None:
    assert run(BASE, Spent(day=D("0.80")))[0] == "send"  # 0.80 + 0.20 = the cap: allowed
    action, reason, detail = run(BASE, Spent(day=D("0.81")))
    assert (action, reason) == ("suppress", SuppressReason.SPEND_CAP)
    assert detail == ("all texts: 0.81 INR spent this day + 0.20 INR would pass the daily cap "
                      "of 1.00 INR")
    assert run(BASE, Spent(month=D("4.90")))[1] is SuppressReason.SPEND_CAP
    rule = replace(BASE, spend_caps=(D("0.30"), None))
    action, reason, detail = run(rule, Spent(rule_day=D("0.20"), day=D("0.20")))
    assert reason is SuppressReason.SPEND_CAP and detail is not None
    assert detail.startswith("rule r: 0.20 INR spent this day")
    assert run(BASE, Spent(day=D("9")))[0] == "suppress"
    assert run(BASE, Spent())[0] == "send"


HEAD = """\
version: 1
defaults:
  region: IN
  sender_id: ACMECO
  gateway: smsc
{spend}
gateways: {{smsc: {{type: smpp, host: h, system_id: x}}}}
templates: {{t: {{text: hi}}}}
rules: [{{name: r, send: {{template: t}}}}]
"""


def test_schema_wants_a_currency_prices_for_caps_and_known_gateways() -> None:
    def problems(spend: str) -> str:
        with pytest.raises(RulesError) as info:
            load_rules_text(HEAD.format(spend=spend), "r.yaml", {})
        return str(info.value)

    assert "spend needs defaults.currency" in problems(
        "  spend: {prices: {smsc: {default: 0.1}}}")
    assert "a spend cap needs prices" in problems("  currency: INR\n  spend: {daily: 10}")
    assert "unknown gateway 'nope'" in problems(
        "  currency: INR\n  spend: {prices: {nope: {default: 0.1}}}")
    assert "defaults.spend.prices.smsc.91" in problems(
        "  currency: INR\n  spend: {prices: {smsc: {'91': 0.1}}}")
    rs = load_rules_text(HEAD.format(spend="  currency: INR\n  spend: {prices: {smsc: "
                                     "{'+91': 0.12}}, daily: 100, monthly: 2000}"), "r.yaml", {})
    spend = rs.defaults.limits().spend
    assert spend.caps == Caps(D(100), D(2000)) and spend.price("smsc", "+9198") == D("0.12")


async def test_the_agent_suppresses_past_a_cap_and_shows_it_on_metrics(tmp_path: Path) -> None:
    """A real agent (SQLite): the missed-call rule's own daily cap lets two texts through, the
    third is suppressed/spend_cap and counted on /metrics with the spend against the cap; a
    restarted agent reads the day's spend back from the store and keeps refusing."""
    from agent.app import AfterCallAgent
    from agent.settings import Settings

    rules = tmp_path / "rules.yaml"
    shutil.copy(Path(__file__).parents[2] / "rules.yaml", rules)
    text = rules.read_text()
    assert "    max_age: 10m\n" in text
    rules.write_text(text.replace("    max_age: 10m\n",
                                  "    max_age: 10m\n    spend: {daily: 0.25}\n", 1))
    now = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 11:30 in Kolkata: outside quiet hours

    def missed(i: int) -> CallRecord:
        return CallRecord(call_id=f"1714543200.{i}", caller=f"+91981100010{i}", queue="Billing",
                          direction=Direction.INBOUND, disposition=Disposition.MISSED,
                          ended_at=now - timedelta(seconds=1))

    def agent() -> AfterCallAgent:
        return AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db"),
                              clock=lambda: now)

    first = agent()
    await first.open_store()
    try:
        for i in range(3):
            await first.pipeline.apply(missed(i))
        rows = sorted(await first.store.list_messages(), key=lambda r: r.call_id)
        assert [(r.state, r.reason) for r in rows] == [
            (MessageState.QUEUED, None), (MessageState.QUEUED, None),
            (MessageState.SUPPRESSED, "spend_cap")]
        assert rows[2].detail == ("rule missed-call-sorry: 0.24 INR spent this day + 0.12 INR "
                                  "would pass the daily cap of 0.25 INR")
        metrics = first.metrics.render()[0].decode()
        assert 'aftercall_messages_total{reason="spend_cap",state="suppressed"} 1.0' in metrics
        assert 'aftercall_spend{period="day"} 0.24' in metrics
    finally:
        await first.dispatcher.stop(timeout=1.0)
        await first.store.close()

    second = agent()
    await second.open_store()
    try:
        await second.pipeline.apply(missed(3))
        [row] = [r for r in await second.store.list_messages() if r.call_id.endswith(".3")]
        assert (row.state, row.reason) == (MessageState.SUPPRESSED, "spend_cap")
    finally:
        await second.dispatcher.stop(timeout=1.0)
        await second.store.close()


def test_totals_keep_each_local_day_apart_whatever_order_the_times_come_in() -> None:
    """The day's keys are remembered for the last local date asked: times from another day,
    before or after it, in any order, still count in their own day and month."""
    c = SpendCounters("Asia/Kolkata")
    tomorrow = NOW + timedelta(days=1)
    last_month = NOW - timedelta(days=40)
    for at in (NOW, tomorrow, NOW, last_month, tomorrow, NOW):
        c.add("r", D("0.10"), at)
    assert c.spent("r", NOW) == Spent(D("0.30"), D("0.30"), D("0.30"), D("0.30"))
    assert c.spent("r", tomorrow) == Spent(D("0.20"), D("0.20"), D("0.20"), D("0.20"))
    assert c.spent("r", last_month) == Spent(D("0.10"), D("0.10"), D("0.10"), D("0.10"))
    assert c.spent("r", NOW - timedelta(days=1)) == Spent(D("0"), D("0.30"), D("0"), D("0.30"))
