"""Wrap-up codes, rules level: the schema, matching and explain, when a call waits for its code,
the tracker's reading of the codes (AMI UserEvent), and the record path holding a call (SQLite)
until the code or the wait's end, across a restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.ami.transcript import iter_messages
from agent.app import AfterCallAgent
from agent.calls.hooks import WrapupCode, clean_code
from agent.calls.tracker import CallTracker
from agent.errors import RulesError
from devkit.harness import rules_with, until
from agent.models import CallRecord, Direction, Disposition, MessageState
from agent.rules.engine import explain
from agent.rules.loader import load_rules_text
from agent.rules.wrapup import WAITING, wrapup_due
from agent.settings import Settings

AMI = Path(__file__).resolve().parents[1] / "fixtures" / "ami"

DOC = """\
version: 1
defaults:
  region: IN
  sender_id: ACMECO
  gateway: smsc
  {defaults}
gateways: {{smsc: {{type: smpp, host: h, system_id: x}}}}
templates: {{t: {{text: hi}}}}
rules:
  - name: sale
    match: {{queue: [Sales], wrapup: [SALE, callback]}}
    send: {{to: caller, template: t}}
    {rule}
  - name: anyone
    match: {{queue: [Sales, Support]}}
    send: {{to: caller, template: t}}
"""
END = datetime(2025, 8, 14, 6, 0, tzinfo=UTC)


def rules(defaults: str = "", rule: str = "") -> object:
    return load_rules_text(DOC.format(defaults=defaults or "timezone: UTC", rule=rule))


def call(**kw: object) -> CallRecord:
    base = CallRecord(call_id="c1", caller="+919811000101", queue="Sales", agent="2002",
                      direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
                      talk_seconds=40, ended_at=END)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_schema_waits_and_refusals() -> None:
    rs = rules("wrapup: {wait: 2m}", "wrapup: {wait: 10s}")
    assert rs.defaults.wrapup.wait == timedelta(minutes=2)
    assert rs.rules[0].wrapup is not None and rs.rules[0].wrapup.wait == timedelta(seconds=10)
    assert rules().defaults.wrapup.wait == timedelta(seconds=60)  # the default
    for bad in ("wrapup: {wait: 0s}", "wrapup: {wait: 2h}", "wrapup: {wiat: 1m}"):
        with pytest.raises(RulesError) as exc:
            rules(bad)
        assert "rules.yaml:6" in str(exc.value) and "defaults.wrapup" in str(exc.value)


def test_a_code_selects_the_rule_case_blind_and_explain_says_why_not() -> None:
    rs = rules()
    first = explain(rs, call(wrapup="CallBack"), now=END)  # type: ignore[arg-type]
    assert [(t.rule, t.matched) for t in first] == [("sale", True), ("anyone", True)]
    assert len(first[0].decisions) == 1 and first[1].decisions == () and first[1].skipped
    other = explain(rs, call(wrapup="NOANSWER"), now=END)  # type: ignore[arg-type]
    assert other[0].reason == "wrap-up code is 'NOANSWER', rule wants one of ['SALE', 'callback']"
    none = explain(rs, call(), now=END + timedelta(minutes=5))  # type: ignore[arg-type]
    assert not none[0].matched and none[1].matched  # decided without the code
    assert none[0].reason == ("no wrap-up code came within 60s of the hangup (decided without "
                              "it), rule wants one of ['SALE', 'callback']")


def test_when_a_call_waits_for_its_code() -> None:
    rs = rules("wrapup: {wait: 2m}")
    assert wrapup_due(rs, call(), END) == END + timedelta(minutes=2)  # type: ignore[arg-type]
    assert wrapup_due(rs, call(), END + timedelta(minutes=2)) is None  # type: ignore[arg-type]
    assert wrapup_due(rs, call(wrapup="SALE"), END) is None  # type: ignore[arg-type]
    # Another condition of the rule already fails: no reason to wait.
    assert wrapup_due(rs, call(queue="Support"), END) is None  # type: ignore[arg-type]
    # The rule's own wait wins over the default's.
    own = rules("wrapup: {wait: 2m}", "wrapup: {wait: 15s}")
    assert wrapup_due(own, call(), END) == END + timedelta(seconds=15)  # type: ignore[arg-type]
    off = rules(rule="enabled: false")
    assert wrapup_due(off, call(), END) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "want"), [("SALE", "SALE"), (" cb-2 ", "cb-2"), ("", None),
                                           ("a b", None), ("x" * 33, None), (None, None)])
def test_clean_code(raw: str | None, want: str | None) -> None:
    assert clean_code(raw) == want


def _transcript() -> bytes:
    return (AMI / "answered_agent_hangup.txt").read_bytes()


def _user_event(headers: str) -> bytes:
    return ("Event: UserEvent\r\nPrivilege: user,all\r\n" + headers.replace("\n", "\r\n")
            + "\r\n\r\n").encode()


def _feed(data: bytes) -> tuple[list[CallRecord], CallTracker]:
    tracker = CallTracker(region="IN")
    out: list[CallRecord] = []
    for msg in iter_messages(data):
        out.extend(tracker.feed(msg))
    assert tracker.warnings["internal_error"] == 0
    return [r for r in out if r.trigger.value == "call_completed"], tracker


def test_tracker_reads_codes_during_and_after_the_call() -> None:
    data = _transcript()
    lid = "aftercall-lab-1795937511.24"
    # From a hangup handler on the caller's channel, before its Hangup: rides on the record.
    head, sep, tail = data.rpartition(b"Event: Hangup\r\n")
    during = head + _user_event(
        f"Channel: PJSIP/trunk-00000018\nUniqueid: {lid}\nLinkedid: {lid}\n"
        f"UserEvent: Wrapup\nCallID: {lid}\nCode: SALE") + sep + tail
    [record], tracker = _feed(during)
    assert record.wrapup == "SALE" and "AFTERCALL_WRAPUP" not in record.vars
    assert tracker.wrapups == []
    # After the call: by call id from a CRM's AMI action (no channel), or by agent.
    after = data + _user_event(f"UserEvent: Wrapup\nCallID: {lid}\nCode: CALLBACK") \
        + _user_event("UserEvent: AftercallWrapup\nAgent: 2003\nCode: SALE") \
        + _user_event("UserEvent: Wrapup\nCode: not a code") \
        + _user_event("UserEvent: Wrapup\nCode: SALE") \
        + _user_event("UserEvent: SomethingElse\nCode: SALE")
    [record], tracker = _feed(after)
    assert record.wrapup is None
    # Each names the PBX whose tracker read it: a call is (PBX, call id).
    assert tracker.take_wrapups() == [WrapupCode("CALLBACK", call_id=lid, pbx="default"),
                                      WrapupCode("SALE", agent="2003", pbx="default")]
    assert tracker.wrapups == []
    assert tracker.warnings["wrapup_bad_code"] == 1
    assert tracker.warnings["wrapup_without_call"] == 1
    # A feature code dialled from the agent's phone: its channel names the agent.
    assert tracker.wrapup("SALE", channel="PJSIP/2003-0000001c") == WrapupCode(
        "SALE", agent="2003", pbx="default")


WRAPUP_RULE = ("  - name: sale\n"
               "    match: {queue: [Sales], disposition: [answered], wrapup: [SALE]}\n"
               "    send: {to: caller, template: support_ticket}\n"
               "    wrapup: {wait: 1s}\n")


async def test_the_record_path_holds_a_call_until_its_code_or_the_wait(tmp_path: Path) -> None:
    path = rules_with(tmp_path, first_rule=WRAPUP_RULE)
    agent = AfterCallAgent(Settings(ami_secret="x", rules=path, db=tmp_path / "a.db"))
    await agent.open_store()
    run = asyncio.create_task(agent.pipeline.run())
    now = datetime.now(UTC)
    try:
        coded = CallRecord(call_id="w1", caller="+919811000111", queue="Sales", agent="2002",
                           direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
                           talk_seconds=40, ended_at=now, vars={"TICKET": "7"})
        timed_out = replace(coded, call_id="w2", caller="+919811000112", agent="2001")
        await agent.pipeline.put(coded)
        await agent.pipeline.put(timed_out)
        store = agent.store

        async def held() -> bool:
            return agent.pipeline.wrapups.held == 2
        await until(held)
        # Stored at once, marked waiting, nothing sent yet.
        assert await store.get_call("w1", pbx="default") is not None
        assert await store.list_messages() == []
        outcomes = await store.rule_outcomes("w1", pbx="default")
        assert outcomes[0].reason is not None and outcomes[0].reason.startswith(WAITING)
        # The agent's code (as the AGI hook or a UserEvent hands it) selects the rule.
        assert await agent.pipeline.wrapups.code(WrapupCode("SALE", agent="2002"))
        assert not await agent.pipeline.wrapups.code(WrapupCode("SALE", agent="2009"))

        async def both_decided() -> bool:
            for c in ("w1", "w2"):
                reason = (await store.rule_outcomes(c, pbx="default"))[0].reason
                if reason is not None and reason.startswith(WAITING):
                    return False
            return True
        await until(both_decided)
        [row] = await store.list_messages()
        assert (row.call_id, row.rule, row.state) == ("w1", "sale", MessageState.QUEUED)
        assert (await store.get_call("w1", pbx="default")).wrapup == "SALE"  # type: ignore[union-attr]
        w2 = await store.rule_outcomes("w2", pbx="default")
        assert w2[0].reason is not None and w2[0].reason.startswith("no wrap-up code came")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await agent.dispatcher.stop(timeout=1.0)
        await agent.store.close()


async def test_a_waiting_call_is_taken_up_again_after_a_restart(tmp_path: Path) -> None:
    path = rules_with(tmp_path, first_rule=WRAPUP_RULE.replace("1s", "30s"))
    settings = Settings(ami_secret="x", rules=path, db=tmp_path / "a.db")
    now = datetime.now(UTC)
    record = CallRecord(call_id="r1", caller="+919811000121", queue="Sales", agent="2002",
                        direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
                        talk_seconds=40, ended_at=now, vars={"TICKET": "9"})
    first = AfterCallAgent(settings)
    await first.open_store()
    try:
        await first.pipeline.apply(record)  # held, then the agent stops (nothing in memory kept)
        assert first.pipeline.wrapups.held == 1
    finally:
        await first.dispatcher.stop(timeout=1.0)
        await first.store.close()

    second = AfterCallAgent(settings)
    await second.open_store()
    run = asyncio.create_task(second.pipeline.run())
    try:
        async def held() -> bool:
            return second.pipeline.wrapups.held == 1
        await until(held)
        assert await second.pipeline.wrapups.code(WrapupCode("SALE", call_id="r1"))

        async def sent() -> bool:
            return bool(await second.store.list_messages())
        await until(sent)
        [row] = await second.store.list_messages()
        assert (row.call_id, row.rule) == ("r1", "sale")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await second.dispatcher.stop(timeout=1.0)
        await second.store.close()

    # Restarted after the wait has passed: decided at once, without the code.
    late = AfterCallAgent(settings, clock=lambda: datetime.now(UTC) + timedelta(minutes=5))
    await late.open_store()
    try:
        await late.pipeline.apply(replace(record, call_id="r2", caller="+919811000122"))
        assert late.pipeline.wrapups.held == 0
        outcomes = await late.store.rule_outcomes("r2", pbx="default")
        assert outcomes[0].reason is not None and outcomes[0].reason.startswith("no wrap-up")
    finally:
        await late.dispatcher.stop(timeout=1.0)
        await late.store.close()


async def test_a_code_for_a_call_on_one_pbx_never_decides_the_same_id_on_another(
        tmp_path: Path) -> None:
    """Two PBXs without systemname give two calls one id: each waits on its own (and after a
    restart), a code naming PBX blr's call selects the rule for that call only, and a code
    that names no PBX is refused rather than guessed."""
    path = rules_with(tmp_path, first_rule=WRAPUP_RULE.replace("1s", "30s"))
    settings = Settings(ami_secret="x", rules=path, db=tmp_path / "a.db")
    now = datetime.now(UTC)
    blr = CallRecord(call_id="1795937525.32", caller="+919811000131", queue="Sales",
                     agent="2002", direction=Direction.INBOUND,
                     disposition=Disposition.ANSWERED, talk_seconds=40, ended_at=now,
                     vars={"TICKET": "5"}, pbx="blr")
    dl = replace(blr, caller="+919811000132", pbx="del")
    first = AfterCallAgent(settings)
    await first.open_store()
    try:
        await first.pipeline.apply(blr)
        await first.pipeline.apply(dl)
        assert first.pipeline.wrapups.held == 2
        # The id alone, or the agent alone, names a call on each PBX: nothing is released.
        assert not await first.pipeline.wrapups.code(WrapupCode("SALE", call_id=blr.call_id))
        assert not await first.pipeline.wrapups.code(WrapupCode("SALE", agent="2002"))
        assert first.pipeline.wrapups.held == 2
    finally:
        await first.dispatcher.stop(timeout=1.0)
        await first.store.close()

    second = AfterCallAgent(settings)  # restarted: both waits are taken up again
    await second.open_store()
    run = asyncio.create_task(second.pipeline.run())
    try:
        async def held() -> bool:
            return second.pipeline.wrapups.held == 2
        await until(held)
        assert await second.pipeline.wrapups.code(
            WrapupCode("SALE", call_id=blr.call_id, pbx="blr"))

        async def sent() -> bool:
            return bool(await second.store.list_messages())
        await until(sent)
        [row] = await second.store.list_messages()
        assert (row.pbx, row.call_id, row.rule, row.number) == (
            "blr", blr.call_id, "sale", blr.caller)
        assert second.pipeline.wrapups.held == 1  # del's call still waits for its own code
        waiting = await second.store.rule_outcomes(dl.call_id, pbx="del")
        assert waiting[0].reason is not None and waiting[0].reason.startswith(WAITING)
        assert (await second.store.get_call(dl.call_id, pbx="del")).wrapup is None  # type: ignore[union-attr]
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await second.dispatcher.stop(timeout=1.0)
        await second.store.close()

    # Restarted after del's wait has passed: decided without a code, and never as a sale.
    late = AfterCallAgent(settings, clock=lambda: datetime.now(UTC) + timedelta(minutes=5))
    await late.open_store()
    run = asyncio.create_task(late.pipeline.run())
    try:
        async def decided() -> bool:
            reason = (await late.store.rule_outcomes(dl.call_id, pbx="del"))[0].reason
            return reason is not None and reason.startswith("no wrap-up")
        await until(decided)
        await late.pipeline.drain(10)
        sales = [(r.pbx, r.number) for r in await late.store.list_messages() if r.rule == "sale"]
        assert sales == [("blr", blr.caller)]
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await late.dispatcher.stop(timeout=1.0)
        await late.store.close()
