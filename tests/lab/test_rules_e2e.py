"""Rules on the lab (real Asterisk, SIPp calls, the simulator, the agent): a caller whose
channel the dialplan puts in Hindi gets the Hindi variant; a delayed text stored by one agent is
sent, once, by the next after a restart; a spend cap suppresses a text and /metrics counts it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import ClientSession

from agent.lab import sipp
from agent.lab.groundtruth import TRUNK, cdr_rows, truth
from agent.models import CallRecord, MessageState, Trigger
from agent.sms.numbers import classify
from devkit.harness import Loop, rules_with, running_loop, until

pytestmark = pytest.mark.lab


def _ensure_hindi_line(lab) -> None:  # type: ignore[no-untyped-def]
    """A lab started before the Hindi DID was added has an older dialplan: reload it."""
    if "There is no existence" in lab.cli(f"dialplan show did-{sipp.DID_HINDI}"):
        lab.use_dialplan("ours")


async def _completed(loop: Loop, caller: str) -> CallRecord:
    """The call_completed record the agent took for ``caller``, checked against the CDR rows
    Asterisk wrote for the same call (its caller and disposition)."""
    def mine() -> list[CallRecord]:
        return [r for r in loop.records
                if r.caller == caller and r.trigger is Trigger.CALL_COMPLETED]

    await until(lambda: len(mine()) == 1, show=lambda: loop.records)
    [record] = mine()
    await until(lambda: record.call_id in cdr_rows(loop.lab.cdr_csv), show=lambda: record)
    want = truth(TRUNK["ours"], "", cdr_rows(loop.lab.cdr_csv)[record.call_id])
    assert (classify(want.caller, "IN").e164 or want.caller) == caller, want
    assert (want.direction, want.disposition) == ("inbound", record.disposition.value), want
    return record


async def test_a_hindi_channel_gets_the_hindi_text_and_an_english_one_english(
        tmp_path, lab) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(_ensure_hindi_line, lab)
    hindi, english = "+919811000401", "+919811000402"
    async with running_loop(tmp_path) as loop:
        for did, caller in ((sipp.DID_HINDI, hindi), (sipp.DID_BILLING, english)):
            r = await sipp.place_call(sipp.TALK, did, caller=caller, duration_ms=1500)
            assert r.ok, r.output
        rows = await loop.wait_rows(lambda rs: sum(
            r.number in (hindi, english) and r.state is MessageState.DELIVERED for r in rs) == 2)
        by = {r.number: r for r in rows}
        assert (by[hindi].rule, by[hindi].template) == ("missed-call-sorry",
                                                        "sorry_we_missed_you_hi")
        assert (by[english].rule, by[english].template) == ("missed-call-sorry",
                                                            "sorry_we_missed_you")
        # What Asterisk said: the Hindi line's channel language, the English one's default.
        assert (await _completed(loop, hindi)).language == "hi"
        assert (await _completed(loop, english)).language == "en"
        [h] = loop.handset(hindi)
        [e] = loop.handset(english)
        assert h.text.startswith("क्षमा करें, हम आपकी कॉल नहीं उठा सके"), h.text
        assert e.text.startswith("Sorry we missed your call"), e.text


LATER = ("  - name: later\n    match: {disposition: [abandoned]}\n"
         "    send: {to: caller, template: sorry_we_missed_you, delay: 30m}\n")


async def test_a_delayed_text_survives_a_restart_and_goes_out_once(
        tmp_path, lab) -> None:  # type: ignore[no-untyped-def]
    """The first agent stores the text for 30 minutes after the hangup and stops before then;
    the next, started with its clock 31 minutes on, sends it once."""
    rules = rules_with(tmp_path, first_rule=LATER)
    db = tmp_path / "aftercall.db"
    shift = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + shift

    caller = "+919811000411"
    async with running_loop(tmp_path / "first", rules=rules, db=db, clock=clock) as loop:
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=caller, duration_ms=1500)
        assert r.ok, r.output
        record = await _completed(loop, caller)
        [row] = await loop.wait_rows(lambda rs: any(x.number == caller for x in rs))
        assert (row.rule, row.state) == ("later", MessageState.DEFERRED), row
        assert record.ended_at is not None and row.next_attempt_at is not None
        assert row.next_attempt_at - record.ended_at == timedelta(minutes=30), row
        assert loop.handset(caller) == []

    shift = timedelta(minutes=31)  # the agent was down when the text fell due
    async with running_loop(tmp_path / "second", rules=rules, db=db, clock=clock) as loop:
        rows = await loop.wait_rows(lambda rs: any(
            x.number == caller and x.state is MessageState.DELIVERED for x in rs))
        assert [(x.rule, x.call_id) for x in rows if x.number == caller] == [
            ("later", record.call_id)]
        [sms] = loop.handset(caller)
        assert sms.text == rows[0].text and sms.text.startswith("Sorry we missed your call")


async def _scrape(loop: Loop) -> str:
    """The running agent's /metrics, over HTTP."""
    async with ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{loop.agent.http_port}/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


SPEND_CAP = 'aftercall_messages_total{reason="spend_cap",state="suppressed"}'


def _counter(scrape: str, name: str) -> float:
    lines = [line for line in scrape.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_a_spend_cap_suppresses_the_text_that_passes_it_and_metrics_count_it(
        tmp_path, lab) -> None:  # type: ignore[no-untyped-def]
    """The missed-call rule's own daily cap (0.20 INR) lets the first text (0.12) through and
    suppresses the second, which would make 0.24."""
    rules = rules_with(tmp_path, ("    max_age: 10m\n", "    max_age: 10m\n"
                                  "    spend: {daily: 0.20}\n"))
    first, second = "+919811000421", "+919811000422"
    async with running_loop(tmp_path, rules=rules) as loop:
        before = _counter(await _scrape(loop), SPEND_CAP)
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=first, duration_ms=1500)
        assert r.ok, r.output
        await _completed(loop, first)
        await loop.wait_rows(lambda rs: any(
            x.number == first and x.state is MessageState.DELIVERED for x in rs))
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=second, duration_ms=1500)
        assert r.ok, r.output
        record = await _completed(loop, second)
        rows = await loop.wait_rows(lambda rs: any(x.number == second for x in rs))
        [row] = [x for x in rows if x.number == second]
        assert (row.rule, row.call_id, row.state, row.reason) == (
            "missed-call-sorry", record.call_id, MessageState.SUPPRESSED, "spend_cap"), row
        assert row.detail == ("rule missed-call-sorry: 0.12 INR spent this day + 0.12 INR "
                              "would pass the daily cap of 0.20 INR"), row.detail
        assert len(loop.handset(first)) == 1 and loop.handset(second) == []
        scrape = await _scrape(loop)
        assert _counter(scrape, SPEND_CAP) == before + 1, scrape
        assert _counter(scrape, 'aftercall_spend{period="day"}') == 0.12, scrape
