"""Wrap-up codes on the lab: the agent ends the call, then dials a feature code with the call's
wrap-up code; the call waited for it and the code selects the rule (real Asterisk, SIPp, the
agent's FastAGI server and AMI UserEvents, the simulator)."""

from __future__ import annotations

import pytest

from agent.lab import sipp
from devkit.harness import running_loop, until
from agent.models import MessageState
from agent.rules.wrapup import WAITING

pytestmark = pytest.mark.lab


async def _give_code(feature: str, code: str) -> None:
    """Agent 2003's phone dials the feature code (the dialplan answers and hangs up)."""
    r = await sipp.place_call(sipp.WAIT_FOR_BYE, feature + code, caller="2003",
                              caller_name="Meera", source_ip=sipp.PHONE_IP, timeout_s=20)
    assert r.ok, r.output


@pytest.mark.parametrize(("feature", "code"), [(sipp.WRAPUP_AGI, "SALE"),
                                               (sipp.WRAPUP_EVENT, "CALLBACK")])
async def test_a_wrapup_code_from_the_dialplan_selects_a_rule(tmp_path, lab, feature,
                                                              code) -> None:
    caller = "+919811000301" if code == "SALE" else "+919811000302"
    async with running_loop(tmp_path) as loop:
        r = await sipp.place_call(sipp.WAIT_FOR_BYE, sipp.DID_WRAPUP, caller=caller)
        assert r.ok, r.output
        waits = loop.agent.pipeline.wrapups
        await until(lambda: waits.held == 1, 15)
        [call] = [c for c in loop.records if c.caller == caller and c.trigger.value == "call_completed"]
        outcomes = await loop.agent.store.rule_outcomes(call.call_id)
        completed = [o for o in outcomes if o.trigger.value == "call_completed"]
        assert completed and all((o.reason or "").startswith(WAITING) for o in completed)
        assert await loop.messages() == []  # nothing decided while it waits
        scrape = loop.agent.metrics.render  # what /metrics answers
        assert b"\naftercall_calls_awaiting_wrapup 1.0\n" in scrape()[0]

        await _give_code(feature, code)
        rows = await loop.wait_rows(lambda rs: any(
            r.rule == "sale-thanks" and r.state is MessageState.DELIVERED for r in rs))
        [row] = [r for r in rows if r.call_id == call.call_id]
        assert (row.rule, row.number) == ("sale-thanks", caller)
        assert [m.text for m in loop.handset(caller)] == [row.text]
        assert (await loop.agent.store.get_call(call.call_id)).wrapup == code  # type: ignore[union-attr]
        assert waits.held == 0
        assert b"\naftercall_calls_awaiting_wrapup 0.0\n" in scrape()[0]
