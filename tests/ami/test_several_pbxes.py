"""One agent watching two PBXs (rules.yaml ``pbxes:``): two fake Asterisks replay the lab's
recorded calls to one real agent (SQLite, the simulator over SMPP). Each call is stored and
texted once under its own PBX's name, and one PBX going away disturbs nothing on the other:
/healthz and /metrics name the link that is down, and it comes back on its own."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from fake_ami import RecordedCall
from pbx_agent import agent_watching
from structlog.testing import capture_logs

from agent.app import AfterCallAgent
from agent.errors import AmiLoginError
from agent.settings import Settings
from devkit.harness import handsets, pbxes_section, rules_with, until


async def _get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


def _metric(body: str, name: str, pbx: str) -> float | None:
    for line in body.splitlines():
        if line.startswith(f'{name}{{pbx="{pbx}"}} '):
            return float(line.split()[-1])
    return None


async def test_two_pbxes_one_agent_each_call_texted_once_and_one_link_down_spares_the_other(
        tmp_path: Path, fake_pbx) -> None:  # type: ignore[no-untyped-def]
    blr, dl = await fake_pbx("blr-s3cret"), await fake_pbx("del-s3cret")
    call = RecordedCall("queue_abandoned")  # texted: missed-call-sorry to the caller
    async with agent_watching(tmp_path, {"blr": {"port": blr.port, "secret": blr.secret},
                                         "del": {"port": dl.port, "secret": dl.secret}}
                              ) as (agent, sim):
        texts = partial(handsets, sim)
        assert [w.name for w in agent.watches] == ["blr", "del"]
        assert blr.logins == 1 and dl.logins == 1
        sent = {}
        for fake, name, caller in ((blr, "blr", "+919800000201"), (dl, "del", "+919800000202")):
            events, _, call_id = call.clone(name, caller, time.time())
            sent[name] = (call_id, caller)
            await fake.send_bytes(events)
        await until(lambda: set(texts()) >= {c for _, c in sent.values()}, 60, show=texts)
        await agent.pipeline.drain(10)
        for name, (call_id, caller) in sent.items():
            stored = await agent.store.get_call(call_id, pbx=name)
            assert stored is not None and stored.pbx == name
        rows = {r.number: r.pbx for r in await agent.store.list_messages()}
        assert rows == {caller: name for name, (_, caller) in sent.items()}

        # blr's Asterisk goes away: del's calls go on being texted.
        port = blr.port
        await blr.stop()
        await until(lambda: not agent.watches[0].ami.connected, 10)
        events, _, _ = call.clone("del2", "+919800000203", time.time())
        await dl.send_bytes(events)
        await until(lambda: "+919800000203" in texts(), 30, show=texts)
        status, body = await _get(agent.http_port, "/healthz")
        assert status == 503  # a PBX whose calls wait for its CDR is an outage, said as one
        health = json.loads(body)["checks"]["ami"]
        assert health["ok"] is False
        assert health["pbxes"]["blr"]["ok"] is False and health["pbxes"]["del"]["ok"] is True
        _, metrics = await _get(agent.http_port, "/metrics")
        assert _metric(metrics, "aftercall_ami_connected", "blr") == 0
        assert _metric(metrics, "aftercall_ami_connected", "del") == 1
        assert dl.logins == 1  # del's link was never touched

        # blr comes back on its address: the link logs in again by itself.
        await blr.start(port)
        await until(lambda: agent.watches[0].ami.connected, 30)
        events, _, _ = call.clone("blr2", "+919800000204", time.time())
        await blr.send_bytes(events)
        await until(lambda: "+919800000204" in texts(), 30, show=texts)
        assert set(texts().values()) == {1}, texts()  # nobody texted twice
        _, metrics = await _get(agent.http_port, "/metrics")
        assert _metric(metrics, "aftercall_ami_reconnects_total", "blr") == 1
        assert _metric(metrics, "aftercall_ami_reconnects_total", "del") in (None, 0)


async def test_a_refused_login_on_one_pbx_stops_the_agent_naming_it(
        tmp_path: Path, fake_pbx) -> None:  # type: ignore[no-untyped-def]
    """A wrong secret is not retried (it never heals by itself): the run ends with the login
    error of that PBX (exit 3 from the command), the other link closed in order."""
    good, bad = await fake_pbx("good"), await fake_pbx("expected")
    rules = rules_with(tmp_path)
    # del's file holds a secret its Asterisk refuses
    rules.write_text(rules.read_text() + pbxes_section(tmp_path, {
        "blr": {"port": good.port, "secret": good.secret},
        "del": {"port": bad.port, "secret": "wrong"}}))
    agent = AfterCallAgent(Settings(rules=rules, db=tmp_path / "a.db", http_port=0, agi_port=0))
    with pytest.raises(AmiLoginError, match=rf"127\.0\.0\.1:{bad.port}"):
        await asyncio.wait_for(agent.run(asyncio.Event().wait), 30)
    assert not agent.watches[0].ami.connected


async def test_call_ids_without_systemname_are_said_once_per_pbx(
        tmp_path: Path, fake_pbx) -> None:  # type: ignore[no-untyped-def]
    """Two PBXs whose Asterisk has no systemname number their calls alike (<epoch>.<n>): the
    agent says so for each (once), with the fix, and /healthz shows it; a PBX whose ids carry
    its systemname is not warned about."""
    plain, named = await fake_pbx("p"), await fake_pbx("n")
    call = RecordedCall("queue_abandoned")
    async with agent_watching(tmp_path, {"blr": {"port": plain.port, "secret": plain.secret},
                                         "del": {"port": named.port, "secret": named.secret}}
                              ) as (agent, _sim):
        with capture_logs() as logs:
            for i in range(2):  # the second call is not said again
                events, _, _ = call.clone(f"p{i}", f"+91980000030{i}", time.time())
                # As Asterisk numbers calls without systemname: "<epoch>.<n>"
                await plain.send_bytes(events.replace(f"p{i}-aftercall-lab-".encode(), b""))
            events, _, _ = call.clone("del", "+919800000309", time.time())
            await named.send_bytes(events)
            await until(lambda: all(w.call_ids for w in agent.watches), 30)
            await agent.pipeline.drain(10)
        said = [e for e in logs if e["event"] == "pbx_call_ids_without_systemname"]
        assert [(e["pbx"], e["log_level"]) for e in said] == [("blr", "warning")]
        assert "systemname in asterisk.conf" in said[0]["fix"]
        assert [w.health()["call_ids"] for w in agent.watches] == ["plain", "systemname"]
