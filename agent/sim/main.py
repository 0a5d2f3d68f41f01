"""Runs the SMSC simulator: SMPP server, HTTP gateway (sim/http.py) and a control API for tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import redacted
from agent.sim.core import FaultConfig, SimCore
from agent.sim.http import make_http_app
from agent.sim.inbox import add_inbox_routes
from agent.sim.smpp import SmppServer

log = structlog.get_logger(__name__)

READY_PREFIX = "SIM_READY"


class MoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sender: str = Field(min_length=1, max_length=20)
    recipient: str = Field(min_length=1, max_length=20)
    text: str = Field(max_length=2000)


class FaultsBody(BaseModel):
    """A partial update of FaultConfig: only the keys present change."""

    model_config = ConfigDict(extra="forbid")
    refuse_bind: bool | None = None
    throttle_tps: float | None = None
    error_for: list[tuple[str, int]] | None = None
    never_respond: bool | None = None
    drop_after: int | None = None
    receipt_delay: float | None = None
    outcome_mix: dict[str, float] | None = None
    duplicate_receipts: bool | None = None
    out_of_order_receipts: bool | None = None


def apply_faults(faults: FaultConfig, changes: dict[str, Any]) -> None:
    """Apply ``changes`` (keys as in FaultConfig; null clears nullable fields) or nothing."""
    before = dict(vars(faults))
    try:
        for key, value in changes.items():
            setattr(faults, key, value)
        faults.validate()
    except ValueError:
        for key, value in before.items():
            setattr(faults, key, value)
        raise


def add_control_routes(app: web.Application, core: SimCore) -> None:
    async def get_messages(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({
            "messages": [m.to_dict() for m in core.messages[since:]],
            "count": len(core.messages),
            "parts_received": core.parts_received,
        })

    async def post_mo(request: web.Request) -> web.Response:
        try:
            body = MoBody.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return web.json_response({"error": redacted(exc)}, status=400)
        n = await core.inject_mo(body.sender, body.recipient, body.text)
        return web.json_response({"listeners": n})

    async def post_faults(request: web.Request) -> web.Response:
        try:
            body = FaultsBody.model_validate(await request.json())
            apply_faults(core.faults, body.model_dump(exclude_unset=True))
        except (ValidationError, ValueError) as exc:
            return web.json_response({"error": redacted(exc)}, status=400)
        return web.json_response({k: v for k, v in vars(core.faults).items()})

    add_inbox_routes(app, core)
    app.router.add_get("/sim/messages", get_messages)
    app.router.add_post("/sim/mo", post_mo)
    app.router.add_post("/sim/faults", post_faults)


class RunningSim:
    """A started simulator; ports are the bound ones (useful with port 0)."""

    def __init__(self, smpp: SmppServer, runners: list[web.AppRunner]) -> None:
        self.smpp = smpp
        self.core = smpp.core
        self._runners = runners
        self.http_port: int | None = None
        self.control_port: int | None = None

    @property
    def smpp_port(self) -> int:
        return self.smpp.port

    async def stop(self) -> None:
        await self.smpp.close()
        for runner in self._runners:
            await runner.cleanup()


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes no public accessor for the bound port
    assert server is not None
    return runner, int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


async def start_sim(
    *,
    smpp_host: str = "127.0.0.1",
    smpp_port: int = 2775,
    http_host: str = "127.0.0.1",
    http_port: int | None = None,
    system_id: str = "aftercall",
    password: str = "secret",
    faults: FaultConfig | None = None,
    record_path: str | None = None,
    control_port: int | None = None,
    seed: int | None = None,
) -> RunningSim:
    """Start the faces; control routes go on the HTTP app, or on their own port when
    ``control_port`` is given (or when there is no HTTP face)."""
    core = SimCore(faults, record_path=record_path, seed=seed)
    smpp = SmppServer(core, system_id=system_id, password=password, host=smpp_host,
                      port=smpp_port)
    await smpp.start()
    sim = RunningSim(smpp, [])
    if http_port is not None:
        app = make_http_app(core)
        if control_port is None:
            add_control_routes(app, core)
        runner, sim.http_port = await _serve(app, http_host, http_port)
        sim._runners.append(runner)
        if control_port is None:
            sim.control_port = sim.http_port
    if control_port is not None:
        control = web.Application()
        add_control_routes(control, core)
        runner, sim.control_port = await _serve(control, http_host, control_port)
        sim._runners.append(runner)
    return sim


async def run_sim(
    *,
    smpp_host: str = "127.0.0.1",
    smpp_port: int = 2775,
    http_host: str = "127.0.0.1",
    http_port: int | None = 13013,
    system_id: str = "aftercall",
    password: str = "secret",
    faults: FaultConfig | None = None,
    record_path: str | None = None,
    control_port: int | None = None,
    seed: int | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Run until ``shutdown_trigger`` returns (default: SIGINT/SIGTERM)."""
    sim = await start_sim(
        smpp_host=smpp_host, smpp_port=smpp_port, http_host=http_host, http_port=http_port,
        system_id=system_id, password=password, faults=faults, record_path=record_path,
        control_port=control_port, seed=seed,
    )
    # One parseable line for parents that started us with port 0 (bench, compose health).
    print(f"{READY_PREFIX} smpp={sim.smpp_port} http={sim.http_port} control={sim.control_port}",
          flush=True)
    log.info("sim_started", smpp_port=sim.smpp_port, http_port=sim.http_port,
             control_port=sim.control_port)
    try:
        if shutdown_trigger is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        else:
            await shutdown_trigger()
    finally:
        await sim.stop()
        log.info("sim_stopped", messages=len(sim.core.messages))
