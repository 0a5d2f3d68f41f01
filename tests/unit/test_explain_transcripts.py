"""The repository's rules.yaml applied to call records replayed from the lab's real AMI
transcripts: the decisions a user would expect for each scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.ami.replay import replay
from agent.models import Trigger
from agent.rules.engine import explain
from agent.rules.loader import load_rules

REPO = Path(__file__).resolve().parents[2]
AMI = REPO / "tests/fixtures/ami"


@pytest.fixture(scope="module")
def rules():
    return load_rules(REPO / "rules.yaml", env={})


def _fired(rules, scenario: str, trigger: Trigger) -> dict[str, list[str | None]]:
    records = [r for r in replay(AMI / f"{scenario}.txt", region="IN",
                                 agents={e: (a.name, a.mobile) for e, a in rules.config.agents.items()})
               if r.trigger is trigger]
    assert len(records) == 1, records
    # Evaluated when the call ended (about 13:00 IST in the recordings): no quiet hours.
    when = records[0].ended_at or records[0].answered_at
    return {t.rule: [d.number for d in t.decisions]
            for t in explain(rules, records[0], now=when) if t.matched}


@pytest.mark.parametrize("scenario, trigger, expected", [
    ("queue_abandoned", Trigger.CALL_COMPLETED, {"missed-call-sorry": ["+919876543210"]}),
    ("no_answer", Trigger.CALL_COMPLETED, {"missed-call-sorry": ["+919876543210"]}),
    ("busy", Trigger.CALL_COMPLETED, {"missed-call-sorry": ["+919876543210"]}),
    ("appointment", Trigger.CALL_COMPLETED, {"appointment-confirmation": ["+919876543210"]}),
    # 2.2 s of talk: support-followup wants 30 s, so nothing for the caller
    ("queue_answered", Trigger.CALL_COMPLETED, {}),
    ("queue_answered", Trigger.CALL_CONNECTED, {"agent-summary": ["+919812345678"]}),
    ("queue_sales", Trigger.CALL_CONNECTED, {"agent-summary": ["+919876543210"]}),
    # withheld caller: the missed-call rule wants a mobile, and answered calls get nothing
    ("anonymous", Trigger.CALL_COMPLETED, {}),
])
def test_decisions_for_lab_transcripts(rules, scenario, trigger, expected):
    assert _fired(rules, scenario, trigger) == expected


def test_explain_says_why_support_followup_did_not_fire(rules):
    records = [r for r in replay(AMI / "queue_answered.txt", region="IN")
               if r.trigger is Trigger.CALL_COMPLETED]
    trace = next(t for t in explain(rules, records[0], now=records[0].ended_at)
                 if t.rule == "support-followup")
    assert not trace.matched and "talk" in trace.reason
