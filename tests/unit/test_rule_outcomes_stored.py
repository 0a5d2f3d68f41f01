"""The record path keeps what each rule said about a call, so the dashboard explains it later
from stored data (even after rules.yaml changed)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.app import AfterCallAgent
from agent.models import CallRecord, Direction, Disposition, MessageState, Trigger
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[2]


async def test_outcomes_are_stored_with_the_messages(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules.yaml", rules)
    now = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 11:30 in Kolkata: outside quiet hours
    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db"),
                           clock=lambda: now)
    await agent.store.open()
    try:
        record = CallRecord(call_id="1714543200.7", caller="+919811000102", queue="Support",
                            direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
                            agent="2001", talk_seconds=12, ended_at=now - timedelta(seconds=2))
        await agent.pipeline.apply(record)
        outcomes = await agent.store.rule_outcomes(record.call_id, pbx="default")
        # Only the rules on call_completed; agent-summary (call_connected) is not listed.
        assert [(o.rule, o.matched) for o in outcomes] == [
            ("appointment-confirmation", False), ("support-followup", False),
            ("support-feedback", False), ("missed-call-sorry", False), ("sale-thanks", False)]
        assert outcomes[1].reason == "talk time 12s is under min_talk 30s"
        assert outcomes[2].reason == "rule is disabled (enabled: false)"
        assert all(o.trigger is Trigger.CALL_COMPLETED for o in outcomes)
        missed = CallRecord(call_id="1714543200.8", caller="+919811000103", queue="Billing",
                            direction=Direction.INBOUND, disposition=Disposition.MISSED,
                            ended_at=now - timedelta(seconds=1))
        await agent.pipeline.apply(missed)
        matched = [o.rule for o in await agent.store.rule_outcomes(missed.call_id, pbx="default") if o.matched]
        assert matched == ["missed-call-sorry"]
        (row,) = [m for m in await agent.store.list_messages() if m.call_id == missed.call_id]
        assert row.state is MessageState.QUEUED
    finally:
        await agent.dispatcher.stop(timeout=1.0)
        await agent.store.close()
