"""Policies on the lab: cooldown, opt-out and quiet hours, each with its own agent run."""

from __future__ import annotations

import pytest

from agent.lab import sipp
from devkit.harness import running_loop
from agent.models import MessageState

pytestmark = pytest.mark.lab


def _by(rows, **kw):
    return [r for r in rows if all(getattr(r, k) == v for k, v in kw.items())]


async def test_cooldown_three_calls_one_sms_and_opt_out(tmp_path, lab):
    async with running_loop(tmp_path) as loop:
        caller = "+919811000010"
        for _ in range(3):
            r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=caller, duration_ms=300)
            assert r.ok, r.output
        rows = await loop.wait_rows(
            lambda rs: len(_by(rs, rule="missed-call-sorry")) == 3
            and all(r.state in (MessageState.DELIVERED, MessageState.SUPPRESSED)
                    for r in _by(rs, rule="missed-call-sorry")))
        sorry = _by(rows, rule="missed-call-sorry")
        assert [r.state for r in sorry].count(MessageState.DELIVERED) == 1
        assert sorted(r.reason for r in sorry if r.state is MessageState.SUPPRESSED) == [
            "cooldown", "cooldown"]
        assert len(loop.handset(caller)) == 1

        opted = "+919811000011"
        await loop.agent.store.opt_out(opted, source="test")
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=opted, duration_ms=300)
        assert r.ok
        rows = await loop.wait_rows(lambda rs: bool(_by(rs, number=opted)))
        (row,) = _by(rows, number=opted)
        assert (row.state, row.reason) == (MessageState.SUPPRESSED, "opt_out")
        assert loop.handset(opted) == []


async def test_call_at_night_is_deferred(tmp_path, lab):
    async with running_loop(tmp_path, night=True) as loop:
        caller = "+919811000020"
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=caller, duration_ms=300)
        assert r.ok
        rows = await loop.wait_rows(lambda rs: bool(_by(rs, number=caller)))
        (row,) = _by(rows, number=caller)
        assert row.state is MessageState.DEFERRED and row.next_attempt_at is not None
        assert loop.handset(caller) == []
