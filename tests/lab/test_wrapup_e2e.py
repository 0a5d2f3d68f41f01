"""Wrap-up codes on the lab: the agent ends the call, then dials a feature code with the call's
wrap-up code; the call waited for it and the code selects the rule (real Asterisk, SIPp, the
agent's FastAGI server and AMI UserEvents, the simulator); and the recording link to that call's
MixMonitor file."""

from __future__ import annotations

import re

import pytest

from agent.lab import sipp
from devkit.harness import rules_with, running_loop, until
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
        outcomes = await loop.agent.store.rule_outcomes(call.call_id, pbx="default")
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
        assert (await loop.agent.store.get_call(call.call_id, pbx="default")).wrapup == code  # type: ignore[union-attr]
        assert waits.held == 0
        assert b"\naftercall_calls_awaiting_wrapup 0.0\n" in scrape()[0]


async def test_the_recording_link_opens_the_calls_mixmonitor_file(tmp_path, lab) -> None:
    """The wrap-up line records its calls (MixMonitor); a rule texting call_recording gives the
    caller a tracked link that the agent's web follows to a signed URL and the file."""
    from aiohttp import ClientSession

    monitor = lab.root / "var/spool/asterisk/monitor"
    rules = rules_with(tmp_path, ("    dir: /var/spool/asterisk/monitor", f"    dir: {monitor}"),
                       first_rule="  - name: rec\n    match: {tags: [sales-wrapup]}\n"
                                  "    send: {to: caller, template: call_recording}\n"
                                  "    continue: true\n")
    caller = "+919811000303"
    async with running_loop(tmp_path, rules=rules) as loop:
        r = await sipp.place_call(sipp.WAIT_FOR_BYE, sipp.DID_WRAPUP, caller=caller)
        assert r.ok, r.output
        await until(lambda: loop.agent.pipeline.wrapups.held == 1, 15)
        await _give_code(sipp.WRAPUP_AGI, "SALE")
        rows = await loop.wait_rows(lambda rs: any(
            x.rule == "rec" and x.state is MessageState.DELIVERED for x in rs))
        [row] = [x for x in rows if x.rule == "rec"]
        [call] = [c for c in loop.records if c.caller == caller
                  and c.trigger.value == "call_completed"]
        assert call.vars["MIXMONITOR_FILENAME"].endswith(".wav")
        code = re.search(r"https://acme\.in/l/([0-9A-Za-z]{10})", row.text or "")
        assert code is not None, row.text
        base = f"http://127.0.0.1:{loop.agent.http_port}"
        async with ClientSession() as http:
            async with http.get(f"{base}/l/{code.group(1)}", allow_redirects=False) as resp:
                assert resp.status == 302
                signed = resp.headers["Location"].removeprefix("https://acme.in")
            assert signed.startswith(f"/rec/{call.call_id}/")
            async with http.get(base + signed) as resp:
                assert resp.status == 200
                assert (await resp.read())[:4] == b"RIFF"  # MixMonitor's WAV, as recorded
            async with http.get(base + signed[:-5] + "x.wav") as resp:
                assert resp.status == 403  # another file under the same signature
