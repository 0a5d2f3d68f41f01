"""Language variants: which one a recipient gets (call, preference, country, default), what
check and explain say about them, and what the loader refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.errors import RulesError
from agent.models import CallRecord, Direction, Disposition, RecipientKind
from agent.commands.check import check
from agent.commands.explain import explain
from agent.rules.engine import decide
from agent.rules.language import normalise
from agent.rules.loader import RuleSet, load_rules, load_rules_text

REPO_RULES = Path(__file__).parents[2] / "rules.yaml"
HEAD = """\
version: 1
defaults:
  region: IN
  sender_id: ACMECO
  gateway: smsc
  dlt_entity_id: "1101456789012345678"
  language_by_country: {NP: ne}
agents: {"2001": {name: Priya, mobile: "+919812345678"}}
gateways: {smsc: {type: smpp, host: 127.0.0.1, system_id: a}}
templates:
  thanks:
    text: Thanks for calling
    dlt_template_id: "1107161234567890123"
    languages: {hi: thanks_hi, ne: thanks_ne}
  thanks_hi: {text: "कॉल के लिए धन्यवाद", language: hi, dlt_template_id: "1107161234567890124"}
  thanks_ne: {text: "फोन गर्नुभएकोमा धन्यवाद", language: ne, dlt_template_id: "1107161234567890125"}
rules:
  - {name: thanks, send: {to: both, template: thanks}}
"""
NOW = datetime(2025, 8, 14, 6, 0, tzinfo=UTC)


def rules(text: str = HEAD) -> RuleSet:
    return load_rules_text(text, "r.yaml", {})


def call(**kw: Any) -> CallRecord:
    base: dict[str, Any] = {"call_id": "1.1", "caller": "+919876500001",
                            "agent": "PJSIP/2001-0000000a", "disposition": Disposition.ANSWERED,
                            "ended_at": NOW}
    return CallRecord(**{**base, **kw})


def caller_decision(record: CallRecord, **kw: Any) -> tuple[str, str, str | None]:
    [d] = [d for d in decide(rules(), record, now=NOW, **kw)
           if d.recipient is RecipientKind.CALLER]
    return d.template, d.text or "", d.language


@pytest.mark.parametrize(("tag", "want"), [("hi_IN", "hi-in"), (" EN-in ", "en-in")])
def test_normalise(tag: str, want: str) -> None:
    assert normalise(tag) == want


def test_the_call_language_picks_the_variant_by_tag_or_primary_subtag() -> None:
    for lang in ("hi", "hi-IN", "hi_IN", "HI"):
        template, text, why = caller_decision(call(language=lang))
        assert (template, text) == ("thanks_hi", "कॉल के लिए धन्यवाद"), lang
        assert why is not None and why.startswith("thanks_hi: hi from the call's language")


def test_order_call_then_preference_then_country_then_default() -> None:
    prefs = {"+919876500001": "ne", "+9779812345678": "hi"}
    # The call's language wins over the number's preference ...
    assert caller_decision(call(language="hi"), preferences=prefs)[0] == "thanks_hi"
    # ... which wins over the country, used when neither says anything useful.
    template, _, why = caller_decision(call(language="ta"), preferences=prefs)
    assert template == "thanks_ne"
    assert why == ("thanks_ne: ne from the number's preference (reply keyword) 'ne'")
    nepal = call(caller="+9779812345678")
    assert caller_decision(nepal)[0] == "thanks_ne"
    assert "the caller's country NP" in (caller_decision(nepal)[2] or "")
    template, text, why = caller_decision(call(language="ta"))
    assert (template, text) == ("thanks", "Thanks for calling")
    assert why == ("thanks: en: the call's language (SMS_LANG, else the channel's Language) "
                   "'ta' has no variant; default")


def test_agents_get_the_default_language_and_each_variant_is_rendered_once() -> None:
    ds = decide(rules(), call(language="hi"), now=NOW)
    got = {d.recipient: (d.template, d.dlt_template_id, d.encoding) for d in ds}
    assert got == {RecipientKind.CALLER: ("thanks_hi", "1107161234567890124", "UCS-2"),
                   RecipientKind.AGENT: ("thanks", "1107161234567890123", "GSM-7")}
    agent = next(d for d in ds if d.recipient is RecipientKind.AGENT)
    assert agent.language == "thanks: en: agents get the default language"


def test_a_template_without_variants_says_nothing_about_language() -> None:
    text = HEAD.replace("    languages: {hi: thanks_hi, ne: thanks_ne}\n", "")
    assert all(d.language is None for d in decide(rules(text), call(language="hi"), now=NOW))


def test_the_loader_refuses_unknown_variants_and_bad_tags() -> None:
    bad = HEAD.replace("languages: {hi: thanks_hi, ne: thanks_ne}",
                       "languages: {hi: nope, 'e n': thanks_ne}")
    with pytest.raises(RulesError) as info:
        rules(bad)
    got = [str(p) for p in info.value.problems]
    assert any(p.startswith("r.yaml:14:") and "templates.thanks.languages.hi: unknown template "
               "'nope'" in p for p in got), got
    assert any("templates.thanks.languages" in p and "e n" in p for p in got), got
    with pytest.raises(RulesError, match="defaults.language"):
        rules(HEAD.replace("  language_by_country: {NP: ne}", "  language: 'english please'"))
    with pytest.raises(RulesError, match="language_by_country"):
        rules(HEAD.replace("{NP: ne}", "{XX: ne}"))


def test_check_validates_every_variant_and_lists_each_rule_languages(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD)
    text, code = check(path)
    assert code == 0, text
    assert "  thanks: en, hi, ne" in text  # under "languages (per rule):"
    assert "thanks_hi                 transactional UCS-2" in text or "thanks_hi" in text
    # a variant over its budget is an error like any template's
    path.write_text(HEAD.replace('text: "कॉल के लिए धन्यवाद"', 'text: "' + "धन्यवाद " * 20 + '"'))
    text, code = check(path)
    assert code == 1 and "templates.thanks_hi.text: worst case is" in text, text


def test_explain_says_which_variant_and_why(tmp_path: Path) -> None:
    import json

    (rules_path := tmp_path / "r.yaml").write_text(HEAD)
    (call_path := tmp_path / "c.json").write_text(json.dumps(call(language="hi-IN").to_dict()))
    text, code = explain(rules_path, call_path)
    assert code == 0, text
    assert ("template thanks_hi: hi from the call's language (SMS_LANG, else the channel's "
            "Language) 'hi-IN'") in text
    assert '"कॉल के लिए धन्यवाद"' in text


def test_repository_rules_have_a_hindi_variant() -> None:
    rs = load_rules(REPO_RULES, env={})
    hindi = [d for d in decide(rs, call(language="hi", queue="Support", talk_seconds=200,
                                        vars={"TICKET": "1"}), now=NOW)]
    assert rs.config.templates["feedback"].languages == {"hi": "feedback_hi"}
    assert rs.config.templates["sorry_we_missed_you"].languages == {"hi": "sorry_we_missed_you_hi"}
    missed = call(language="hi", disposition=Disposition.MISSED, agent=None,
                  direction=Direction.INBOUND, talk_seconds=0)
    [d] = decide(rs, missed, now=NOW)
    assert d.template == "sorry_we_missed_you_hi" and d.encoding == "UCS-2", d
    assert hindi  # the support call is texted (in English: support_ticket has no variant)


async def test_a_language_keyword_picks_the_variant_for_the_next_call(tmp_path: Path) -> None:
    """HINDI from a caller: stored, and the next missed call from that number is texted in
    Hindi by the running agent's record path (real SQLite store); the choice survives a
    restart; ENGLISH switches back."""
    import shutil
    from datetime import timedelta

    from agent.app import AfterCallAgent
    from agent.models import InboundSms
    from agent.settings import Settings

    shutil.copy(REPO_RULES, rules_path := tmp_path / "rules.yaml")
    now = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)  # 11:30 in Kolkata: outside quiet hours
    caller = "+919811000103"

    def missed(n: int) -> CallRecord:
        return CallRecord(call_id=f"1714543200.{n}", caller=caller, queue="Billing",
                          direction=Direction.INBOUND, disposition=Disposition.MISSED,
                          ended_at=now - timedelta(seconds=1))

    def agent() -> AfterCallAgent:
        return AfterCallAgent(Settings(ami_secret="x", rules=rules_path, db=tmp_path / "a.db"),
                              clock=lambda: now)

    first = agent()
    await first.store.open()
    try:
        out = await first.replies.handle(InboundSms("smsc", caller, "ACMECO", "Hindi", now))
        assert (out.keyword, out.action) == ("HINDI", "language:hi")
        await first.pipeline.apply(missed(1))
        [row] = [m for m in await first.store.list_messages() if m.call_id == "1714543200.1"]
        assert row.template == "sorry_we_missed_you_hi" and row.text.startswith("क्षमा")
    finally:
        await first.dispatcher.stop(timeout=1.0)
        await first.store.close()

    second = agent()
    await second.open_store()  # as a restarted agent's run() does
    try:
        assert second.languages == {caller: "hi"}
        await second.pipeline.apply(missed(2))
        [row] = [m for m in await second.store.list_messages() if m.call_id == "1714543200.2"]
        assert row.template == "sorry_we_missed_you_hi"
        await second.replies.handle(InboundSms("smsc", caller, "ACMECO", "english", now))
        assert second.languages == {caller: "en"}
        await second.pipeline.apply(missed(3))
        [row] = [m for m in await second.store.list_messages() if m.call_id == "1714543200.3"]
        assert row.template == "sorry_we_missed_you" and row.text.startswith("Sorry")
    finally:
        await second.dispatcher.stop(timeout=1.0)
        await second.store.close()


def test_language_keywords_need_a_language() -> None:
    with pytest.raises(RulesError, match="language"):
        rules(HEAD + "replies: {keywords: {HINDI: {action: language}}}\n")
    with pytest.raises(RulesError, match="bad language"):
        rules(HEAD + "replies: {keywords: {HINDI: {language: 'h i'}}}\n")
    assert rules(HEAD + "replies: {keywords: {HINDI: {language: hi}}}\n").config.replies \
        .keywords["HINDI"].language == "hi"
