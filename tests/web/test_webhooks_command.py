"""`aftercall webhooks` prints the reply URL to configure on a Kannel or Jasmin gateway: the
URL it prints is the one the agent then accepts (the same secret, made beside the database by
whichever runs first), and a reply posted to it reaches the agent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from web_helpers import MakeClient, Recorder
from yarl import URL

from agent.app import AfterCallAgent
from agent.cli import build_parser, execute
from agent.settings import Settings
from devkit.harness import rules_with

PUBLIC = "https://agent.example.com"


def test_each_gateway_is_listed_with_what_to_configure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = rules_with(tmp_path)
    args = build_parser().parse_args(["webhooks", "--rules", str(rules), "--db",
                                      str(tmp_path / "a.db"), "--public-url", PUBLIC])
    assert execute(args) == 0
    out = capsys.readouterr().out
    assert "smsc: SMPP" in out  # replies come over the bind
    assert "backup (kannel):" in out and "sms-service get-url" in out
    assert re.search(rf"replies:  {PUBLIC}/webhooks/backup/inbound\?t=[0-9a-f]{{32}}\n", out)


async def test_the_printed_reply_url_is_the_one_the_agent_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make_client: MakeClient) -> None:
    rules = rules_with(tmp_path)
    db = tmp_path / "a.db"
    args = build_parser().parse_args(["webhooks", "--rules", str(rules), "--db", str(db),
                                      "--public-url", PUBLIC])
    assert await args.run(args) == 0
    url = re.search(r"replies:  (\S+inbound\S+)", capsys.readouterr().out)
    assert url is not None
    # the agent, started later on the same database, signs with the secret made then
    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=db, public_url=PUBLIC))
    configs = {name: gw.config for name, gw in agent.gateways.items() if hasattr(gw, "config")
               and gw.config.preset.value == "kannel"}
    rec = Recorder()
    client = await make_client(webhooks=configs, recorder=rec)
    params = {"from": "+919812345678", "to": "ACMECO", "text": "STOP", "ts": "1714564860"}
    r = await client.get(str(URL(url.group(1)).relative()), params=params)
    assert r.status == 200, await r.text()
    assert [(m.sender, m.text) for m in rec.inbound] == [("+919812345678", "STOP")]
    forged = str(URL(url.group(1)).relative()).replace("t=", "t=0")
    assert (await client.get(forged, params=params)).status == 403
