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
