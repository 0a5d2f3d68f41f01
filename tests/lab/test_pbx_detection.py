"""Trunks and phones detected from the live lab's PJSIP configuration (the carrier style, whose
contexts no built-in name matches): through the agent's own AMI client, with the style's user
(system class) and with the README's least-privilege user, and as `aftercall doctor` says it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.ami.client import AmiClient
from agent.ami.config import AmiConfig
from agent.ami.inventory import EndpointWatch, Inventory
from tests.lab.test_doctor_live import doctor, lines
from tests.unit.test_tracker_cdr import inventory

pytestmark = pytest.mark.lab

LEAST_SECRET = "least-only-in-this-test"


@pytest.fixture
def carrier(lab) -> Iterator[object]:  # type: ignore[no-untyped-def]
    lab.up(dialplan="carrier")
    conf = lab.root / "etc/asterisk/manager.conf"
    original = conf.read_text()
    conf.write_text(original + f"\n[least]\nsecret = {LEAST_SECRET}\ndeny = 0.0.0.0/0.0.0.0\n"
                    "permit = 127.0.0.1/255.255.255.255\nread = call,agent,cdr,user,reporting\n"
                    "write = reporting\n")
    lab.cli("manager reload")
    try:
        yield lab
    finally:
        conf.write_text(original)
        lab.up()  # back to the repository's own style


@contextlib.asynccontextmanager
async def logged_in(user: str, secret: str) -> AsyncIterator[AmiClient]:
    ready = asyncio.Event()

    async def on_login(client: AmiClient) -> None:
        ready.set()

    client = AmiClient(AmiConfig(username=user, secret=secret), on_login=on_login)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield client
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def test_live_answers_classify_as_the_recorded_ones(carrier) -> None:  # type: ignore[no-untyped-def]
    got: list[Inventory] = []
    async with logged_in("aftercall", carrier.secret()) as client:
        inv = await EndpointWatch(got.append).refresh(client)
        # The lists' events went to the actions, not to the tracker's event queue.
        queued = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
    assert inv is not None and got == [inv] and inv.complete and not inv.refused
    recorded = await asyncio.to_thread(inventory, "carrier")  # it runs its own loop
    assert dict(inv.endpoints) == dict(recorded.endpoints)
    assert not [e for e in queued if str(e.get("Event", "")).startswith(
        ("EndpointList", "EndpointDetail", "IdentifyDetail", "ExtensionStatus", "AuthDetail"))]


async def test_least_privilege_user_degrades_and_says_so_once(carrier) -> None:  # type: ignore[no-untyped-def]
    watch = EndpointWatch(lambda inv: None)
    with capture_logs() as logs:
        async with logged_in("least", LEAST_SECRET) as client:
            first = await watch.refresh(client)
            await watch.refresh(client)
    assert first is not None and first.refused == {"PJSIPShowEndpoints": "Permission denied"}
    assert [e["event"] for e in logs].count("pbx_endpoints_not_readable") == 1
    # Hints and the line registration are open to the reporting class.
    assert first.kinds("trunk") == ["sbc2"] and "frontdesk" in first.kinds("phone")


def test_doctor_names_detected_trunks_and_what_a_user_lacks(carrier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = doctor(carrier, tmp_path)
    ok = "\n".join(lines(r, "ok"))
    assert "trunk carrier7: identify carrier7-ip matches 127.0.0.1" in ok, r.stdout
    assert "trunk sbc2: the PBX registers to it" in ok and "phone frontdesk: hint" in ok
    assert any("write class system lets aftercall read PJSIP endpoints" in n
               for n in lines(r, "note"))
    (tmp_path / "least").mkdir()
    least = doctor(carrier, tmp_path / "least", user="least", secret=LEAST_SECRET)
    (note,) = [n for n in lines(least, "note") if "PJSIP endpoints: not readable" in n]
    assert "'least'" in note and "write class system" in note
    assert LEAST_SECRET not in least.stdout + least.stderr
