"""The agent checks its AMI user's privileges at every login, against the lab's Asterisk:
the sample user (write = reporting) passes quietly; a user that may originate, hang up or run
CLI commands is named in a warning, and tracking goes on (a warning, not a refusal)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from agent.ami.client import AmiClient
from agent.ami.config import AmiConfig

pytestmark = pytest.mark.lab

OPS_SECRET = "ops-only-in-this-test"


@contextlib.contextmanager
def extra_manager_user(lab) -> Iterator[None]:  # type: ignore[no-untyped-def]
    conf = lab.root / "etc/asterisk/manager.conf"
    original = conf.read_text()
    conf.write_text(original + f"\n[ops]\nsecret = {OPS_SECRET}\ndeny = 0.0.0.0/0.0.0.0\n"
                    "permit = 127.0.0.1/255.255.255.255\nread = call\n"
                    "write = call,originate,command,reporting\n")
    lab.cli("manager reload")
    try:
        yield
    finally:
        conf.write_text(original)
        lab.cli("manager reload")


async def login_once(username: str, secret: str) -> tuple[AmiClient, list[dict]]:
    logged_in = asyncio.Event()

    async def on_login(client: AmiClient) -> None:
        # What the agent does after every login: it still works with an over-broad user.
        assert await client.core_show_channels() is not None
        logged_in.set()

    client = AmiClient(AmiConfig(username=username, secret=secret), on_login=on_login)
    with capture_logs() as logs:
        task = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(logged_in.wait(), 10)
        finally:
            await client.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return client, logs


async def test_sample_user_is_least_privilege(lab) -> None:
    client, logs = await login_once("aftercall", lab.secret())
    assert client.stats.excess_write == ()
    assert not [e for e in logs if e["event"] == "ami_user_overprivileged"]


async def test_overprivileged_user_is_named_in_a_warning(lab) -> None:
    with extra_manager_user(lab):
        client, logs = await login_once("ops", OPS_SECRET)
    assert {"Originate", "Command", "Hangup", "Redirect"} <= set(client.stats.excess_write)
    [warning] = [e for e in logs if e["event"] == "ami_user_overprivileged"]
    assert warning["log_level"] == "warning"
    assert "'ops'" in warning["message"] and "write = reporting" in warning["message"]
    assert OPS_SECRET not in str(logs)
