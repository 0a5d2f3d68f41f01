"""The whole loop on the lab: SIPp call -> real Asterisk -> agent -> simulator -> receipt.

The repository's own rules.yaml is used as it is, except that its quiet hours are moved away
from (or onto) the moment the test runs, so results do not depend on the time of day.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_asyncio

from agent.lab import sipp
from devkit.harness import running_loop
from agent.models import MessageState

pytestmark = [pytest.mark.lab, pytest.mark.asyncio(loop_scope="module")]

SUPPORT_CALLER = "+919811000001"
APPT_CALLER = "+919811000002"
ABANDON_CALLER = "+919811000003"
NOANSWER_CALLER = "+919811000004"
SALES_CALLER = "+919811000005"
PRIYA_MOBILE = "+919812345678"  # agent 2001 (Support) in rules.yaml's directory
ARJUN_MOBILE = "+919876543210"  # agent 2002 (Sales, appointments)


def _by(rows, **kw):
    return [r for r in rows if all(getattr(r, k) == v for k, v in kw.items())]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def day(workdir, lab):
    """One agent run by day: the use cases of rules.yaml, placed concurrently."""
    async with running_loop(workdir / "day") as loop:
        async def agent_2002_calls():
            # Agent 2002 takes appointments and Sales: one call at a time (ringinuse=no).
            return [
                await sipp.place_call(sipp.TALK, sipp.DID_APPOINTMENT, caller=APPT_CALLER,
                                      duration_ms=1000),
                await sipp.place_call(sipp.TALK, sipp.DID_SALES, caller=SALES_CALLER,
                                      duration_ms=2500),
                await sipp.place_call(sipp.TALK, sipp.DID_SALES, anonymous=True,
                                      duration_ms=2500),
            ]

        *calls, serial = await asyncio.gather(
            # support-followup needs 30 s of talk in the Support queue
            sipp.place_call(sipp.TALK, sipp.DID_SUPPORT, caller=SUPPORT_CALLER,
                            caller_name="Asha", duration_ms=31_500),
            sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=ABANDON_CALLER,
                            duration_ms=1500),
            sipp.place_call(sipp.REFUSED, sipp.DID_NO_ANSWER, caller=NOANSWER_CALLER),
            agent_2002_calls(),
        )
        calls += serial
        assert all(c.ok for c in calls), [c.output for c in calls if not c.ok]

        def settled(rows) -> bool:
            sent = [r for r in rows if r.state is not MessageState.SUPPRESSED]
            return len(rows) >= 7 and all(r.state is MessageState.DELIVERED for r in sent)

        rows = await loop.wait_rows(settled, timeout=30)
        yield loop, rows


async def test_support_ticket_delivered_with_the_rendered_text(day):
    loop, rows = day
    (row,) = _by(rows, rule="support-followup")
    assert row.number == SUPPORT_CALLER and row.state is MessageState.DELIVERED
    call = await loop.agent.store.get_call(row.call_id, pbx="default")
    ticket = call.vars["TICKET"]
    assert f"ticket #{ticket} is logged" in row.text and row.text.startswith("Hi Asha,")
    (handset,) = loop.handset(SUPPORT_CALLER)
    assert handset.text == row.text  # what the phone shows is what was rendered
    assert row.hangup_to_submit_ms is not None and row.hangup_to_submit_ms < 2000


async def test_appointment_confirmation_says_reply_c(day):
    loop, rows = day
    (row,) = _by(rows, rule="appointment-confirmation")
    assert row.number == APPT_CALLER and row.state is MessageState.DELIVERED
    assert "Reply C to cancel" in row.text and "2026-12-14T10:00" in row.text
    assert [m.text for m in loop.handset(APPT_CALLER)] == [row.text]


async def test_missed_and_abandoned_callers_get_sorry(day):
    loop, rows = day
    sorry = _by(rows, rule="missed-call-sorry")
    assert {r.number for r in sorry} == {ABANDON_CALLER, NOANSWER_CALLER}
    assert all(r.state is MessageState.DELIVERED for r in sorry)
    (abandoned,) = [r for r in sorry if r.number == ABANDON_CALLER]
    assert "to Billing" in abandoned.text


async def test_agent_summary_reaches_the_agents_mobile_on_connect(day):
    loop, rows = day
    summaries = _by(rows, rule="agent-summary")
    numbers = sorted(r.number for r in summaries)
    # Support call -> Priya; named Sales call and the anonymous Sales call -> Arjun.
    assert numbers == sorted([PRIYA_MOBILE, ARJUN_MOBILE, ARJUN_MOBILE])
    texts = [m.text for m in loop.handset(PRIYA_MOBILE)]
    assert any(SUPPORT_CALLER in t and "Support" in t for t in texts)


async def test_fastagi_hook_attaches_tag_and_variable(day):
    loop, rows = day
    summary = next(r for r in _by(rows, rule="agent-summary") if SALES_CALLER in (r.text or ""))
    call = await loop.agent.store.get_call(summary.call_id, pbx="default")
    assert "lead" in call.tags and call.vars["CAMPAIGN"] == "diwali"
    assert loop.agent.agi.requests >= 1


async def test_anonymous_caller_is_suppressed_invalid_number(day):
    loop, rows = day
    anon = [r for r in rows if r.recipient_kind.value == "caller" and r.number is None]
    # The anonymous Sales call: answered, so no caller rule fires; nothing is sent to it.
    assert all(r.state is MessageState.SUPPRESSED and r.reason == "invalid_number" for r in anon)
    assert not [m for m in loop.sim.core.messages if "anonymous" in m.dest]


async def test_no_second_sms_when_the_same_calls_are_handled_again(day, workdir):
    """Idempotency: another agent on the same database, fed the same call records (as a
    restart or a replay would), sends nothing new."""
    loop, rows = day
    before = len(loop.sim.core.messages)
    records = list(loop.records)
    import dataclasses

    from agent.app import AfterCallAgent

    again = AfterCallAgent(dataclasses.replace(loop.settings, agi_port=0))
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop.wait))
    await asyncio.wait_for(again.ready.wait(), 10)
    from agent.rules.engine import decide

    handled = []
    for record in records:
        decisions = decide(again.rules, record, now=record.ended_at or record.answered_at)
        handled += await again.dispatcher.handle(decisions, call=record)
    stop.set()
    await asyncio.wait_for(task, 15)
    assert handled and {r.id for r in handled} <= {r.id for r in rows}
    assert len(loop.sim.core.messages) == before
    after = await loop.messages(newest_first=False)
    assert len(after) == len(rows)


async def test_tracked_link_click_counts_in_ctr(day):
    import re

    import aiohttp

    from agent.reports import build_report

    loop, rows = day
    (row,) = _by(rows, rule="support-followup")
    url = re.search(r"https://acme\.in/l/([0-9A-Za-z]{10})", row.text)
    assert url, row.text
    base = f"http://127.0.0.1:{loop.agent.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/l/{url.group(1)}", allow_redirects=False,
                            headers={"User-Agent": "handset-test"}) as resp:
            assert resp.status == 302
            assert resp.headers["Location"].startswith("https://help.acme.in/t/")
        async with http.get(f"{base}/l/AAAAAAAAAA", allow_redirects=False) as resp:
            assert resp.status == 404
    report = await build_report(loop.agent.store, since=None, until=None, rule=None,
                                gateway=None, price_per_segment=None, currency=None)
    support = next(r for r in report.by_rule if r.key == "support-followup")
    assert support.clicked == 1 and support.ctr == 1.0


async def test_reply_stop_opts_out_and_c_is_acknowledged(day):
    loop, rows = day
    # "C" from the appointment caller: tagged, and the cancel acknowledgement reaches the phone.
    await loop.sim.core.inject_mo(APPT_CALLER.lstrip("+"), "ACMECO", "c")

    def acked(rs):
        return any(r.rule.startswith("reply:") and r.number == APPT_CALLER
                   and r.state is MessageState.DELIVERED for r in rs)

    await loop.wait_rows(acked)
    texts = [m.text for m in loop.handset(APPT_CALLER)]
    assert any("appointment is cancelled" in t for t in texts)
    # STOP from the support caller: opted out, and the next call from it sends nothing.
    await loop.sim.core.inject_mo(SUPPORT_CALLER.lstrip("+"), "ACMECO", "STOP")

    async def opted() -> None:
        while not await loop.agent.store.is_opted_out(SUPPORT_CALLER):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(opted(), 1.0)  # the promise: opt-out within a second
    r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=SUPPORT_CALLER,
                              duration_ms=300)
    assert r.ok
    rows = await loop.wait_rows(lambda rs: bool(_by(rs, number=SUPPORT_CALLER,
                                                    rule="missed-call-sorry")))
    (row,) = _by(rows, number=SUPPORT_CALLER, rule="missed-call-sorry")
    assert (row.state, row.reason) == (MessageState.SUPPRESSED, "opt_out")
