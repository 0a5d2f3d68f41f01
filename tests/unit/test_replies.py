"""Replies on a real SQLite store with the repository's rules.yaml and an in-test gateway."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))
from web_helpers import BASE, FakeGateway, sent

from agent.dispatch import Dispatcher
from agent.models import CallRecord, InboundSms, MessageState
from agent.loop.replies import ReplyHandler, normalise_keyword, rating_of
from agent.rules.loader import RuleSet, load_rules
from agent.store.sqlite import SqliteStore

RULES = Path(__file__).parents[2] / "rules.yaml"
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
CALLER = "+919812345678"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(RULES, env={})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "aftercall.db") as s:
        yield s


def inbound(text: str, sender: str = CALLER, gateway: str = "smsc") -> InboundSms:
    return InboundSms(gateway, sender, "ACMECO", text, NOW + timedelta(minutes=1))


def handler(store: SqliteStore, rules: RuleSet, *gws: FakeGateway) -> ReplyHandler:
    disp = Dispatcher(store, {g.name: g for g in gws}, clock=lambda: NOW)
    return ReplyHandler(store, rules, disp.submit_now, clock=lambda: NOW)


@pytest.mark.parametrize(("text", "word"), [
    ("STOP", "STOP"), (" stop. ", "STOP"), ("Stop All!", "STOPALL"), ("un-subscribe", "UNSUBSCRIBE"),
    ("c", "C"), ("", ""),
])
def test_normalise_keyword(text: str, word: str) -> None:
    assert normalise_keyword(text) == word


def test_rating_of() -> None:
    assert [rating_of(t) for t in ("5", " 3. ", "6", "0", "45", "5 stars")] == [5, 3, None, None,
                                                                                 None, None]


async def test_stop_opts_out_at_once_and_links_to_the_last_message(
    store: SqliteStore, rules: RuleSet
) -> None:
    mid = await sent(store, replace(BASE, call_ended_at=NOW), NOW)
    h = handler(store, rules)
    out = await h.handle(inbound(" Stop "))
    assert await store.is_opted_out(CALLER)  # in force when the reply is handled, not later
    assert (out.keyword, out.action, out.message_id, out.sentiment) == ("STOP", "opt_out", mid, None)
    # Kannel strips the "+": the same number, so START finds it.
    await h.handle(inbound("start", sender=CALLER[1:]))
    assert not await store.is_opted_out(CALLER)


async def test_c_is_tagged_and_acknowledged_through_the_original_gateway(
    store: SqliteStore, rules: RuleSet
) -> None:
    smsc, backup = FakeGateway("smsc"), FakeGateway("backup")
    await store.save_call(CallRecord(call_id=BASE.call_id, caller=CALLER), now=NOW)
    mid = await sent(store, replace(BASE, rule="appointment-confirmation", gateway="backup",
                                    template="appointment_confirmed", call_ended_at=NOW), NOW)
    h = handler(store, rules, smsc, backup)
    out = await h.handle(inbound("c"))
    assert (out.keyword, out.action, out.message_id) == ("C", "tag:cancel_request", mid)
    assert not await store.is_opted_out(CALLER)  # C is custom here, not a carrier STOP word
    assert smsc.accepted == [] and len(backup.accepted) == 1
    ack = backup.accepted[0]
    assert ack.to == CALLER and ack.text.startswith("Your appointment is cancelled")
    assert ack.dlt_template_id == "1107161234567890128"
    assert out.auto_reply is not None and out.auto_reply.state is MessageState.SUBMITTED
    assert out.auto_reply.rule == "reply:C" and out.auto_reply.call_id == BASE.call_id
    again = await h.handle(inbound("C"))  # a resent webhook or a second C: acknowledged once
    assert len(backup.accepted) == 1 and again.auto_reply is not None


async def test_free_text_gets_a_sentiment_and_digits_a_rating_only_when_asked(
    store: SqliteStore, rules: RuleSet
) -> None:
    h = handler(store, rules)
    await sent(store, replace(BASE, call_ended_at=NOW), NOW)
    good = await h.handle(inbound("Thank you, the agent was wonderful and very helpful"))
    bad = await h.handle(inbound("Terrible service, nobody fixed my problem, awful"))
    meh = await h.handle(inbound("I called at 3 pm about my order"))
    assert (good.sentiment_label, bad.sentiment_label, meh.sentiment_label) == (
        "positive", "negative", "neutral")
    assert (await h.handle(inbound("4"))).rating is None  # support_ticket asked no rating
    await sent(store, replace(BASE, call_id="2", rule="support-feedback", template="feedback",
                              call_ended_at=NOW), NOW + timedelta(seconds=1))
    rated = await h.handle(inbound("4"))
    assert rated.rating == 4 and rated.sentiment is None


async def test_reply_from_a_stranger_is_stored_unlinked(store: SqliteStore,
                                                        rules: RuleSet) -> None:
    out = await handler(store, rules).handle(inbound("who is this?", sender="+919999999999"))
    assert out.message_id is None and out.reply_id > 0


@pytest.mark.parametrize(("sender", "setup", "reason"), [
    ("+919812345678", "opt_out", "opt_out"),
    ("+919812345678", "dnd", "dnd"),
    ("12", None, "invalid_number"),
    ("+2348031234567", None, "country_not_allowed"),
    ("+919812345678", "limit", "rate_limited"),
])
async def test_acknowledgements_pass_the_same_policy_as_every_text(
    store: SqliteStore, rules: RuleSet, sender: str, setup: str | None, reason: str
) -> None:
    smsc = FakeGateway("smsc")
    if setup == "opt_out":
        await store.opt_out(sender, source="test")
    elif setup == "dnd":
        await store.add_dnd([sender], source="test")
    elif setup == "limit":  # the per-number default (3/1h) is spent
        for i in range(3):
            await sent(store, replace(BASE, call_id=f"x{i}", number=sender, call_ended_at=NOW),
                       NOW)
    disp = Dispatcher(store, {"smsc": smsc}, clock=lambda: NOW, limits=rules.defaults.limits())
    h = ReplyHandler(store, rules, disp.submit_now, clock=lambda: NOW)
    out = await h.handle(inbound("C", sender=sender))
    assert out.auto_reply is not None
    assert (out.auto_reply.state, out.auto_reply.reason) == (MessageState.SUPPRESSED, reason)
    assert smsc.accepted == []


async def test_stop_acknowledgement_reaches_the_number_it_opted_out(
    store: SqliteStore, tmp_path: Path
) -> None:
    text = RULES.read_text().replace("STOP: opt_out", "STOP: {action: opt_out, reply: cancel_ack}")
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    rules = load_rules(path, env={})
    smsc = FakeGateway("smsc")
    disp = Dispatcher(store, {"smsc": smsc}, clock=lambda: NOW, limits=rules.defaults.limits())
    out = await ReplyHandler(store, rules, disp.submit_now, clock=lambda: NOW).handle(
        inbound("STOP"))
    assert await store.is_opted_out(CALLER)
    assert out.auto_reply is not None and out.auto_reply.state is MessageState.SUBMITTED
    assert len(smsc.accepted) == 1


async def test_help_is_built_in_and_answered_through_the_policy(
    store: SqliteStore, rules: RuleSet, tmp_path: Path
) -> None:
    """HELP and INFO answer with replies.help, through the original gateway, as a logged
    message that passes the policy like every acknowledgement (an opted-out number gets none);
    without replies.help they are only logged."""
    assert rules.config.replies.help == "help_info"
    smsc, backup = FakeGateway("smsc"), FakeGateway("backup")
    mid = await sent(store, replace(BASE, gateway="backup", call_ended_at=NOW), NOW)
    disp = Dispatcher(store, {"smsc": smsc, "backup": backup}, clock=lambda: NOW,
                      limits=rules.defaults.limits())
    h = ReplyHandler(store, rules, disp.submit_now, clock=lambda: NOW)
    out = await h.handle(inbound(" help? "))
    assert (out.keyword, out.action, out.message_id) == ("HELP", "help", mid)
    assert not await store.is_opted_out(CALLER)
    assert smsc.accepted == [] and [m.text for m in backup.accepted] == [
        "ACME Support: call 18005550100, 9am-9pm. Reply STOP to stop texts. -ACME"]
    assert out.auto_reply is not None and out.auto_reply.rule == "reply:HELP"
    assert out.auto_reply.template == "help_info"

    other = "+919876500000"
    await store.opt_out(other, source="test")
    out = await h.handle(inbound("Info", sender=other))
    assert out.action == "help" and out.auto_reply is not None
    assert (out.auto_reply.state, out.auto_reply.reason) == (MessageState.SUPPRESSED, "opt_out")

    # A word of the operator's own can be a help keyword; without replies.help, no answer.
    text = RULES.read_text().replace("  help: help_info", "").replace(
        "    C: {tag:", "    AIUTO: help\n    C: {tag:")
    (path := tmp_path / "rules.yaml").write_text(text)
    bare = load_rules(path, env={})
    h = ReplyHandler(store, bare, disp.submit_now, clock=lambda: NOW)
    for word in ("HELP", "AIUTO"):
        out = await h.handle(inbound(word, sender="+919876500001"))
        assert (out.keyword, out.action, out.auto_reply) == (word, "help", None)
