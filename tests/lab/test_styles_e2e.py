"""The same end-to-end suite on each lab dialplan style: calls placed by SIPp on the real
Asterisk -> the agent's records equal Asterisk's own CDR rows of the same calls -> SMS to the
right person -> delivered by the simulator. Switching style is a reload of the running lab."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.lab import sipp
from agent.lab.groundtruth import TRUNK, cdr_rows, truth
from devkit.harness import rules_with, running_loop, until
from agent.lab.record import STYLE_SCENARIOS, place
from agent.models import MessageState, Trigger
from agent.sms.numbers import classify

pytestmark = [pytest.mark.lab]

ANSWERED, BUSY, RING = "+919811000011", "+919811000012", "+919811000013"
# Callers who hang up after the PBX answered them, before any person did: during the greeting,
# and in a queue whose only member is paused (the styles with queues).
GREETING, QUEUED = "+919811000014", "+919811000015"
RING_GROUP = "+919811000016"  # gives up while a ring group rings (its other phone is busy)
PRIYA = "+919812345678"  # "2001" in rules.yaml's directory: endpoint 2001 or alice (2001)
# Two rules on top of the repository's: a thank-you after an answered inbound call, and a
# follow-up to the number an agent dialled (click-to-call); and the agent told on connect.
EXTRA = """\
  - name: thanks
    match: {direction: [inbound], disposition: [answered]}
    send: {to: caller, template: feedback}
  - name: outbound-followup
    match: {direction: [outbound], disposition: [answered]}
    send: {to: caller, template: feedback}
  - name: agent-direct
    on: call_connected
    match: {direction: [inbound]}
    send: {to: agent, template: agent_summary}
"""


@pytest.mark.parametrize("style", ["freepbx", "vanilla", "carrier"])
async def test_calls_records_cdr_and_sms_on_each_dialplan_style(style: str, tmp_path: Path,
                                                                 lab) -> None:  # type: ignore[no-untyped-def]
    scenarios = {s.name: s for s in STYLE_SCENARIOS[style]}
    rules = rules_with(tmp_path, first_rule=EXTRA)
    try:
        await run_suite(style, scenarios, rules, tmp_path)
    finally:
        await asyncio.to_thread(lab.up)  # back to the repository's own style for the others


async def run_suite(style: str, scenarios: dict, rules: Path, tmp_path: Path) -> None:  # type: ignore[type-arg]
    async with running_loop(tmp_path / style, rules=rules, dialplan=style) as loop:
        calls = [
            await sipp.place_call(sipp.TALK, sipp.DID_DIRECT, caller=ANSWERED, duration_ms=1500),
            await sipp.place_call(sipp.REFUSED, sipp.DID_BUSY, caller=BUSY),
            await sipp.place_call(sipp.REFUSED, sipp.DID_RING_TIMEOUT, caller=RING),
            await place(scenarios["outbound"]),
        ]
        left = await left_before_anyone_answered(style)
        calls += left.values()
        assert all(c.ok for c in calls), [c.output for c in calls if not c.ok]

        def completed() -> list:  # type: ignore[type-arg]
            return [r for r in loop.records if r.trigger is Trigger.CALL_COMPLETED]

        await until(lambda: len(completed()) >= len(calls), show=lambda: loop.records)
        # Asterisk writes each CDR row as the call's channels end (batch=no).
        ids = {r.call_id for r in completed()}
        await until(lambda: ids <= set(cdr_rows(loop.lab.cdr_csv)), show=lambda: ids)
        cdr = cdr_rows(loop.lab.cdr_csv)
        for record in completed():
            dialled = sipp.PSTN_NUMBER if record.direction.value == "outbound" else ""
            want = truth(TRUNK[style], dialled, cdr[record.call_id])
            assert (record.direction.value, record.caller, record.disposition.value) == (
                want.direction, classify(want.caller, "IN").e164 or want.caller,
                want.disposition), record
            assert want.billsec - 0.05 <= record.talk_seconds <= want.billsec + want.rows_summed
            assert record.agent == want.agent and record.pbx == "default"
            # The PBX's Answer() is ANSWERED with a billsec in the CDR; nobody talked.
            assert want.left_in is None or (want.left_in in record.tags
                                            and record.talk_seconds == 0.0)
            assert record.started_at is not None and record.started_at.year >= 2026
            if style == "carrier":
                # No context name tells here: the agent read PJSIP's configuration at login
                # (the style's user has the system class). The front desk's caller id is the
                # company's number; its outbound call must never text it.
                assert (record.direction_by or "").startswith("detected"), record

        want_rows = sorted([
            ("thanks", ANSWERED), ("agent-direct", PRIYA),
            ("missed-call-sorry", BUSY), ("missed-call-sorry", RING),
            ("outbound-followup", sipp.PSTN_NUMBER),
            *(("missed-call-sorry", n) for n in left),
        ])

        def settled(rows) -> bool:  # type: ignore[no-untyped-def]
            return (len(rows) >= len(want_rows)
                    and all(r.state is MessageState.DELIVERED for r in rows))

        rows = await loop.wait_rows(settled, timeout=30)
        got = sorted((r.rule, r.number) for r in rows)
        assert got == want_rows
        assert [m.dest.lstrip("+") for m in loop.handset(PRIYA)] == [PRIYA.lstrip("+")]


async def left_before_anyone_answered(style: str) -> dict[str, sipp.CallResult]:
    """By caller: one who hangs up 1.5 s into the greeting that follows Answer(); on a style
    with queues, one in a queue whose only member is paused (no phone rings); with ring
    groups, one who gives up while a ring group rings (its other phone busy)."""
    dids = {s.did for s in STYLE_SCENARIOS[style]}
    calls = {GREETING: await sipp.place_call(sipp.TALK, sipp.DID_GREETING, caller=GREETING,
                                             duration_ms=1500)}
    if sipp.DID_QUEUE_WAIT in dids:
        calls[QUEUED] = await sipp.place_call(sipp.TALK, sipp.DID_QUEUE_WAIT, caller=QUEUED,
                                              duration_ms=1500)
    if sipp.DID_RING_GROUP_BUSY in dids:
        calls[RING_GROUP] = await sipp.place_call(sipp.GIVE_UP, sipp.DID_RING_GROUP_BUSY,
                                                  caller=RING_GROUP, duration_ms=1500)
    return calls


async def test_callers_who_reach_nobody_get_the_missed_call_text_once(tmp_path: Path,
                                                                      lab) -> None:  # type: ignore[no-untyped-def]
    # The repository's own style: Answer() then a greeting before the Support queue, and the
    # Callback queue whose only member is paused. Asterisk's CDR says ANSWERED (its own
    # Answer()); the records say abandoned, where the caller left, no talk, no agent.
    async with running_loop(tmp_path, rules=rules_with(tmp_path)) as loop:
        calls = list((await left_before_anyone_answered("ours")).values())
        assert [c.ok for c in calls] == [True, True], [c.output for c in calls]

        def completed() -> list:  # type: ignore[type-arg]
            return [r for r in loop.records if r.trigger is Trigger.CALL_COMPLETED]

        await until(lambda: len(completed()) >= 2, show=lambda: loop.records)
        ids = {r.call_id for r in completed()}
        await until(lambda: ids <= set(cdr_rows(loop.lab.cdr_csv)), show=lambda: ids)
        cdr = cdr_rows(loop.lab.cdr_csv)
        got = {}
        for record in completed():
            (row,) = cdr[record.call_id]
            assert (row["disposition"], row["dstchannel"]) == ("ANSWERED", "")
            assert int(row["billsec"]) >= 1
            want = truth(TRUNK["ours"], "", cdr[record.call_id])
            assert (record.disposition.value, want.disposition) == ("abandoned", "abandoned")
            assert (record.talk_seconds, record.agent, record.answered_at) == (0.0, None, None)
            got[record.caller] = (want.left_in, want.left_in in record.tags)
        assert got == {GREETING: ("left_in_ivr", True), QUEUED: ("left_in_queue", True)}

        def settled(rows) -> bool:  # type: ignore[no-untyped-def]
            return len(rows) >= 2 and all(r.state is MessageState.DELIVERED for r in rows)

        rows = await loop.wait_rows(settled, timeout=30)
        assert sorted((r.rule, r.number) for r in rows) == [
            ("missed-call-sorry", GREETING), ("missed-call-sorry", QUEUED)]
        assert [len(loop.handset(n)) for n in (GREETING, QUEUED)] == [1, 1]
