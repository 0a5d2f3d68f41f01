"""Two PBXs without systemname, one agent: both fake Asterisks replay the same recorded call
with the same plain call id (``<epoch>.<n>``) at the same moment, as two real PBXs started
alike do. Each call is stored under its own PBX, each caller is texted once, and each call
is explained on its own (the API refuses the bare id, naming both PBXs)."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from pathlib import Path

import aiohttp
from fake_ami import RecordedCall
from pbx_agent import agent_watching
from structlog.testing import capture_logs

from devkit.harness import handsets, until

CALLERS = {"blr": "+919800000401", "del": "+919800000402"}


async def _get(port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, json.loads(await resp.text())


async def test_one_call_id_on_two_pbxes_is_two_calls_each_texted_once(
        tmp_path: Path, fake_pbx) -> None:  # type: ignore[no-untyped-def]
    fakes = {"blr": await fake_pbx("blr-s3cret"), "del": await fake_pbx("del-s3cret")}
    call = RecordedCall("queue_abandoned")  # texted: missed-call-sorry to the caller
    ends = time.time()
    async with agent_watching(tmp_path, {name: {"port": f.port, "secret": f.secret}
                                         for name, f in fakes.items()}) as (agent, sim):
        texts = partial(handsets, sim)
        ids = set()
        with capture_logs() as logs:
            sends = []
            for name, fake in fakes.items():
                events, _, call_id = call.clone("same", CALLERS[name], ends)
                # As Asterisk numbers calls without systemname: "<epoch>.<n>", alike on both
                plain = events.replace(b"same-aftercall-lab-", b"")
                ids.add(call_id.replace("same-aftercall-lab-", ""))
                sends.append(fake.send_bytes(plain))
            await asyncio.gather(*sends)
            await until(lambda: set(texts()) >= set(CALLERS.values()), 60, show=texts)
            await agent.pipeline.drain(10)
        [call_id] = ids
        assert sorted(texts().items()) == sorted((c, 1) for c in CALLERS.values())  # once each
        said = sorted(e["pbx"] for e in logs if e["event"] == "pbx_call_ids_without_systemname")
        assert said == ["blr", "del"]

        for name, caller in CALLERS.items():
            stored = await agent.store.get_call(call_id, pbx=name)
            assert stored is not None and stored.caller == caller and stored.pbx == name
        rows = await agent.store.list_messages()
        assert sorted((r.pbx, r.call_id, r.number) for r in rows) == [
            (name, call_id, caller) for name, caller in sorted(CALLERS.items())]

        status, body = await _get(agent.http_port, f"/api/calls/{call_id}")
        assert status == 409 and body["pbxes"] == ["blr", "del"], body
        for path, name in ((f"/api/calls/del:{call_id}?unmasked", "del"),
                           (f"/api/calls/{call_id}?pbx=blr&unmasked", "blr")):
            status, body = await _get(agent.http_port, path)
            assert status == 200, body
            assert body["call"]["pbx"] == name and body["call"]["caller"] == CALLERS[name]
            assert [m["number"] for m in body["messages"]] == [CALLERS[name]]
            assert any(r["matched"] for r in body["rules"])
        status, body = await _get(agent.http_port, "/api/calls?pbx=del")
        assert [(c["call_id"], c["pbx"], c["caller"]) for c in body["calls"]] == [
            (call_id, "del", CALLERS["del"][:3] + "******" + CALLERS["del"][-4:])]


async def _agi_tag(port: int, uniqueid: str, *, source: str) -> str:
    """The dialplan's ``AGI(agi://AGENT/tag?name=vip)`` on the call ``uniqueid``, run by the PBX
    at ``source`` (no ``pbx=``): what the agent answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"agi_network: yes\nagi_network_script: tag?name=vip\n"
                 b"agi_uniqueid: " + uniqueid.encode() + b"\nagi_channel: PJSIP/x-1\n\n")
    line = (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    writer.write(b"200 result=1\n")
    await writer.drain()
    writer.close()
    return line


async def test_a_hook_without_pbx_goes_to_the_pbx_whose_host_ran_it(
        tmp_path: Path, fake_pbx) -> None:  # type: ignore[no-untyped-def]
    """PBXs on two hosts give a call the same plain id; a FastAGI hook without ``pbx=`` used to
    be refused as ambiguous (``agi_call_ambiguous``): the PBX is now the one whose AMI host the
    hook came from, and the other PBX's call with that id is left alone."""
    fakes = {"blr": await fake_pbx("blr-s3cret"),
             "del": await fake_pbx("del-s3cret", host="127.0.0.2")}
    call = RecordedCall("queue_answered")
    ends = time.time()
    async with agent_watching(tmp_path, {name: {"host": f.host, "port": f.port,
                                                "secret": f.secret}
                                         for name, f in fakes.items()}) as (agent, _):
        plain: dict[str, list[bytes]] = {}
        for name in fakes:
            events, _, call_id = call.clone("same", CALLERS[name], ends)
            blocks = events.replace(b"same-aftercall-lab-", b"").split(b"\r\n\r\n")
            plain[name] = [b + b"\r\n\r\n" for b in blocks if b.strip()]
        cut = next(i for i, b in enumerate(plain["del"]) if b.startswith(b"Event: Hangup"))
        for name, fake in fakes.items():
            await fake.send_bytes(b"".join(plain[name][:cut]))
        uniqueid = call_id.replace("same-aftercall-lab-", "")
        await until(lambda: all(w.tracker.holds(uniqueid) for w in agent.watches), 20)
        assert await _agi_tag(agent.agi.port, uniqueid, source="127.0.0.2") == (
            "SET VARIABLE AFTERCALL_ATTACHED 1")
        for name, fake in fakes.items():
            await fake.send_bytes(b"".join(plain[name][cut:]))

        async def stored() -> bool:  # the record of the hangup (the answer's came before)
            calls = [await agent.store.get_call(uniqueid, pbx=n) for n in fakes]
            return all(c is not None and c.ended_at is not None for c in calls)

        await until(stored, 20)
        tags = {n: (await agent.store.get_call(uniqueid, pbx=n)).tags  # type: ignore[union-attr]
                for n in fakes}
        assert "vip" in tags["del"] and "vip" not in tags["blr"], tags
