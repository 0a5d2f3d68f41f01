"""What the simulator's HTTP faces share: their credentials and state, the submit path's
faults, the receipt schedule, and the client that calls the agent back."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from agent.sim.core import SimCore

log = structlog.get_logger("agent.sim.http")

# SMPP statuses that mean "try again later" when a gateway is asked over HTTP.
TEMPORARY = {0x08, 0x14, 0x45, 0x64}  # SYSERR, MSGQFUL, SUBMITFAIL, TXFAIL


@dataclass
class SimHttpConfig:
    """Credentials the simulated gateways accept, and where they send replies (MO)."""

    username: str = "aftercall"
    password: str = "secret"
    account_sid: str = "AC" + "0" * 32
    auth_token: str = "secret"
    webhook_secret: str = "secret"  # signs generic callbacks
    mo_urls: dict[str, str] = field(default_factory=dict)  # preset name -> URL
    callback_attempts: int = 3  # Jasmin-style resend when a callback is not acknowledged
    callback_retry_delay: float = 0.05
    callback_timeout: float = 5.0


@dataclass(frozen=True)
class CallbackRecord:
    """One callback the simulator made (receipt or MO), for tests to assert on."""

    preset: str
    kind: str  # "receipt" or "inbound"
    url: str
    status: int | None  # None: no HTTP answer
    body: str
    acked: bool


class SimHttpState:
    def __init__(self, core: SimCore, config: SimHttpConfig) -> None:
        self.core = core
        self.config = config
        self.callbacks: list[CallbackRecord] = []
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # submits answered per connection (for drop_after), keyed by id(transport)
        self.per_connection: dict[int, tuple[asyncio.BaseTransport, int]] = {}
        self._changed = asyncio.Event()

    def record(self, rec: CallbackRecord) -> None:
        self.callbacks.append(rec)
        self._changed.set()

    async def wait_for_callbacks(self, n: int, timeout: float, *, kind: str | None = None
                                 ) -> list[CallbackRecord]:
        def matching() -> list[CallbackRecord]:
            return [c for c in self.callbacks if kind is None or c.kind == kind]

        async def _wait() -> None:
            while len(matching()) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return matching()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


SIM_HTTP = web.AppKey("sim_http", SimHttpState)


async def params(request: web.Request) -> dict[str, Any]:
    p: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        p.update({k: str(v) for k, v in (await request.post()).items()})
    elif request.method == "POST" and request.content_type == "application/json":
        # Jasmin's JSON form of /send: the same keys, and list values such as custom_tlvs.
        doc = await request.json()
        if isinstance(doc, dict):
            p.update({k: v if isinstance(v, list) else str(v) for k, v in doc.items()})
    return p


async def faults_before_answer(state: SimHttpState, request: web.Request) -> None:
    """Black hole and connection drops: the client wrote its request and gets nothing back."""
    f = state.core.faults
    if f.never_respond:
        await asyncio.Event().wait()  # until the client gives up or the app stops
    if f.drop_after is not None:
        transport = request.transport
        if transport is None:
            return
        for key, (t, _) in list(state.per_connection.items()):
            if t.is_closing():
                del state.per_connection[key]
        n = state.per_connection.get(id(transport), (transport, 0))[1]
        if n >= f.drop_after:
            transport.abort()
            raise asyncio.CancelledError  # nothing more to do for this request
        state.per_connection[id(transport)] = (transport, n + 1)


def basic_auth(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


def admit(state: SimHttpState, dest: str) -> int:
    return state.core.admit(dest)


async def due(state: SimHttpState, smsc_id: str) -> AsyncIterator[tuple[float, str, str]]:
    """The core's receipt plan for one message, each entry yielded when it falls due."""
    plan = state.core.receipt_plan(smsc_id)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for delay, stat, err in plan:
        await asyncio.sleep(max(0.0, start + delay - loop.time()))
        yield delay, stat, err


async def call_back(
    state: SimHttpState, preset: str, kind: str, method: str, url: str, *,
    expect: str | None, form: Mapping[str, str] | None = None, data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Call the agent back; retried like Jasmin when ``expect`` is not answered."""
    assert state.session is not None
    attempts = state.config.callback_attempts if expect is not None else 1
    for attempt in range(attempts):
        status: int | None = None
        body = ""
        try:
            async with state.session.request(
                method, url, data=dict(form) if form is not None else data,
                headers=dict(headers or {}), allow_redirects=False,
            ) as resp:
                status, body = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            body = type(exc).__name__
        acked = status is not None and 200 <= status < 300 and (expect is None or body.strip() == expect)
        state.record(CallbackRecord(preset, kind, url, status, body, acked))
        if acked:
            return
        log.info("sim_callback_unacknowledged", preset=preset, kind=kind, status=status,
                 attempt=attempt + 1)
        if attempt + 1 < attempts:
            await asyncio.sleep(state.config.callback_retry_delay)
