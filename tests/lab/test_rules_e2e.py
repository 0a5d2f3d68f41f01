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
