"""The simulator's handset inbox: a page and `aftercall smsc-sim inbox|reply`, so a person can
read what a handset got and answer it as the customer (a real SMPP bind receives the reply)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
from conftest import PASSWORD, SYSTEM_ID, Inbox

from agent.gateways.smpp.client import SmppGateway
from agent.sim.main import start_sim


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "smsc-sim", *argv],
                          capture_output=True, text=True, timeout=60)


async def test_inbox_page_and_cli_reply_reach_the_bound_gateway() -> None:
    sim = await start_sim(smpp_port=0, http_port=0, system_id=SYSTEM_ID, password=PASSWORD)
    gw = SmppGateway("smsc", "127.0.0.1", sim.smpp_port, SYSTEM_ID, PASSWORD,
                     enquire_link_interval=None)
    inbox = Inbox()
    try:
        await gw.start(inbox.on_receipt, inbox.on_inbound)
        await gw.wait_ready(5.0)
        sim.core.accept_part(channel="smpp", source="ACMECO", dest="+919811000104",
                             text="Appt confirmed. Reply C to cancel. <b>-ACME</b>", concat=None,
                             tlvs={})
        url = f"http://127.0.0.1:{sim.http_port}"
        listed = await asyncio.to_thread(_cli, "inbox", "--url", url)
        assert listed.returncode == 0, listed.stderr
        assert "+919811000104\t<- ACMECO\tAppt confirmed. Reply C to cancel." in listed.stdout
        sent = await asyncio.to_thread(_cli, "reply", "C", "--url", url, "--from",
                                       "+919811000104")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == "reply from +919811000104 to ACMECO: C\n"
        await inbox.wait(lambda: bool(inbox.inbound))
        (mo,) = inbox.inbound
        assert (mo.sender, mo.recipient, mo.text) == ("+919811000104", "ACMECO", "C")
        # The page: the message (escaped) and the reply, and a form that sends replies too.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/sim/inbox") as r:
                page = await r.text()
            assert "&lt;b&gt;-ACME&lt;/b&gt;" in page and "reply to ACMECO" in page
            async with http.post(f"{url}/sim/inbox/reply",
                                 data={"from": "+919811000104", "text": "STOP"},
                                 allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/sim/inbox"
        await inbox.wait(lambda: len(inbox.inbound) == 2)
        assert inbox.inbound[1].text == "STOP"
    finally:
        await gw.close()
        await sim.stop()
    down = await asyncio.to_thread(_cli, "inbox", "--url", url)
    assert down.returncode == 3 and down.stderr.startswith("smsc-sim: cannot read the inbox:")
    assert down.stderr.endswith("\n")
