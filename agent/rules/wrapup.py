"""Whether a finished call must wait for its agent's wrap-up code, until when (pure).

A rule that matches on ``wrapup`` cannot be judged at the hangup: the code comes later (the
agent types it in during wrap-up). The whole call waits, not only that rule, because rules
are ordered and the first match per recipient wins: a later rule's text may depend on
whether the earlier one matched. It waits only when such a rule holds on everything else,
and at most that rule's ``wrapup.wait`` after the hangup; then the rules decide without the
code (agent.rules.engine says so). The waiting itself is agent.loop.wrapups'.
"""

from __future__ import annotations

from datetime import datetime

from agent.models import CallRecord, RuleOutcome, Trigger
from agent.rules.match import failed_condition, wrapup_wait
from agent.rules.loader import RuleSet

#: How the calls view (and a restarted agent) tells a call still waiting for its code.
WAITING = "waiting for the agent's wrap-up code"


def wrapup_due(rules: RuleSet, record: CallRecord, now: datetime) -> datetime | None:
    """Until when ``record`` waits for its wrap-up code; None: decide it now (it has one, no
    rule that would match needs one, or the wait is over)."""
    if record.wrapup is not None or record.trigger is not Trigger.CALL_COMPLETED:
        return None
    end = record.ended_at or now
    due: datetime | None = None
    for rule in rules.rules:
        if (not rule.enabled or rule.match.wrapup is None or rule.on != "call_completed"
                or failed_condition(rule, rules, record, now, wrapup=False) is not None):
            continue
        at = end + wrapup_wait(rules, rule)
        if at > now and (due is None or at > due):
            due = at
    return due


def waiting_outcomes(rules: RuleSet, due: datetime) -> list[RuleOutcome]:
    """What the calls view shows for a call while it waits: every completed-call rule is
    undecided until ``due`` (or the code)."""
    reason = f"{WAITING} (until {due:%Y-%m-%d %H:%M:%S %Z})".replace(" )", ")")
    return [RuleOutcome(r.name, False, reason, (), Trigger.CALL_COMPLETED)
            for r in rules.rules if r.on == "call_completed"]


def is_waiting(outcomes: list[RuleOutcome]) -> bool:
    return any(o.reason is not None and o.reason.startswith(WAITING) for o in outcomes)
