"""Fixtures: a simulator on a loopback port and an SMPP gateway bound to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agent.gateways.smpp.client import SmppGateway
from agent.models import InboundSms, Receipt
from agent.sim.core import FaultConfig
from agent.sim.main import RunningSim, start_sim

SYSTEM_ID = "aftercall"
PASSWORD = "s3cr3tpw"


class Inbox:
    """What the gateway pushed to the dispatcher; waiters use events, not sleeps."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound: list[InboundSms] = []
        self._changed = asyncio.Event()

    async def on_receipt(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)
        self._changed.set()

    async def on_inbound(self, sms: InboundSms) -> None:
        self.inbound.append(sms)
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(smpp_port=0, http_port=None, system_id=SYSTEM_ID,
                              password=PASSWORD, faults=FaultConfig(receipt_delay=0.01), seed=1)
    try:
        yield running
    finally:
        await running.stop()


GatewayFactory = Callable[..., Awaitable[tuple[SmppGateway, Inbox]]]


@pytest.fixture
async def make_gateway(sim: RunningSim) -> AsyncIterator[GatewayFactory]:
    made: list[SmppGateway] = []

    async def factory(*, bind: bool = True, **kwargs: Any) -> tuple[SmppGateway, Inbox]:
        options: dict[str, Any] = dict(
            response_timeout=2.0, bind_timeout=2.0, backoff=(0.05, 0.2),
            throttle_backoff=(0.02, 0.2), enquire_link_interval=None,
        )
        options.update(kwargs)
        password = options.pop("password", PASSWORD)
        gw = SmppGateway("smsc", "127.0.0.1", sim.smpp_port, SYSTEM_ID, password, **options)
        inbox = Inbox()
        await gw.start(inbox.on_receipt, inbox.on_inbound)
        made.append(gw)
        if bind:
            await gw.wait_ready(5.0)
        return gw, inbox

    yield factory
    for gw in made:
        await gw.close()
