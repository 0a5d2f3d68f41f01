"""SIGHUP reload: a good rules.yaml replaces the rules, a bad one is refused and the old stay."""

from __future__ import annotations

import shutil
from pathlib import Path

from structlog.testing import capture_logs

from agent.app import AfterCallAgent
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[2]


async def test_reload_refuses_a_bad_file_and_keeps_the_old_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules.yaml", rules)
    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db"))
    before = agent.rules
    rules.write_text(rules.read_text().replace("min_talk: 30s", "min_talk: thirty"))
    with capture_logs() as logs:
        assert agent.reload_rules() is False
    assert agent.rules is before and agent.stats.reload_errors == 1
    (event,) = [e for e in logs if e["event"] == "rules_reload_refused"]
    assert "rules.yaml:" in event["error"] and "min_talk" in event["error"]

    rules.write_text(rules.read_text().replace("min_talk: thirty", "min_talk: 45s"))
    assert agent.reload_rules() is True
    assert agent.rules is not before and agent.replies.rules is agent.rules
    followup = next(r for r in agent.rules.rules if r.name == "support-followup")
    assert followup.match.min_talk.total_seconds() == 45

    # The agent directory reaches the tracker too: a changed mobile is used from now on.
    rules.write_text(rules.read_text().replace('"+919812345678"', '"+919812345600"', 1))
    assert agent.reload_rules() is True
    assert agent.tracker.agents["2001"] == ("Priya", "+919812345600")


async def test_reload_reaches_reply_keywords(tmp_path):
    """A keyword added to rules.yaml works on the next reply, without a restart."""
    from datetime import UTC, datetime

    from agent.models import InboundSms

    rules = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules.yaml", rules)
    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db"))
    await agent.store.open()
    try:
        halt = InboundSms(gateway="smsc", sender="+919812345670", recipient="ACMECO",
                          text="HALT", received_at=datetime.now(UTC))
        await agent.replies.handle(halt)
        assert not await agent.store.is_opted_out("+919812345670")
        rules.write_text(rules.read_text().replace("    STOP: opt_out\n",
                                                   "    STOP: opt_out\n    HALT: opt_out\n"))
        assert agent.reload_rules() is True
        await agent.replies.handle(halt)
        assert await agent.store.is_opted_out("+919812345670")
    finally:
        await agent.store.close()


async def test_reload_reaches_the_dashboards_time_zone(tmp_path):
    """The dashboard shows times in the zone rules.yaml names now, not the one at start."""
    import aiohttp

    rules = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules.yaml", rules)
    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db",
                                    http_port=0))
    await agent.store.open()
    runner = await agent._start_web()
    try:
        url = f"http://127.0.0.1:{agent.http_port}/api/session"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert (await r.json())["timezone"] == "Asia/Kolkata"
            rules.write_text(rules.read_text().replace("timezone: Asia/Kolkata",
                                                       "timezone: Europe/London"))
            assert agent.reload_rules() is True
            async with http.get(url) as r:
                assert (await r.json())["timezone"] == "Europe/London"
    finally:
        await runner.cleanup()
        await agent.store.close()
