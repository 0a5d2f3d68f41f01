"""Dialplan hooks: a FastAGI server that attaches tags and variables to the current call.

    exten => s,n,AGI(agi://127.0.0.1:4573/tag?name=vip)
    exten => s,n,AGI(agi://127.0.0.1:4573/attach?tag=vip&TICKET=${CRM_TICKET})
    exten => _*88.,1,AGI(agi://127.0.0.1:4573/disposition?code=${EXTEN:3})

``disposition`` (or ``wrapup``) gives the agent's wrap-up code: for the call named by
``call=<Linkedid>``, else for the most recent call waiting for one of the agent named by
``agent=``, else of the endpoint whose channel runs the AGI (a feature code the agent dials).
It answers ``AFTERCALL_WRAPUP=1|0`` (0: no call of that agent waits for a code).

An agent watching several PBXs is not told which one ran a hook (FastAGI does not say), and
PBXs without ``systemname`` give calls the same ids: ``pbx=NAME`` (any route) names the PBX;
without it, the PBX whose AMI host the hook connected from (``pbx_of``), when exactly one is;
else a call known to two PBXs is refused rather than guessed (``agi_call_ambiguous``).

``tag``/``name``/``tags`` parameters become tags, every other parameter a variable (``vars.X``
in templates). The hook also sets the variables on the channel (inherited ``__NAME``) so later
dialplan steps see them, and answers ``AFTERCALL_ATTACHED=1|0``. The CSV CDR does not log
channel variables: for recovery from the CDR, use the classic AGI script
(``asterisk_conf/agi-bin/aftercall-attach``), which also writes ``CDR(userfield)``.

panoramisk's ``Application.handler`` spins forever on a peer that closes before sending its
headers; this server reads them with a size and time bound, then hands the request to
panoramisk's ``Request`` for the AGI command exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import structlog
from panoramisk.fast_agi import Request

from agent.calls.hooks import clean_code, parse_hook

__all__ = ["AgiServer", "AttachFn", "parse_hook"]

log = structlog.get_logger("aftercall.agi")

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 5.0

# (uniqueid, channel, tags, vars, pbx) -> True when the call was found
AttachFn = Callable[[str, str, tuple[str, ...], Mapping[str, str], str | None], bool]
# (code, call id, agent, channel, pbx) -> True when a call took the code
WrapupFn = Callable[[str, str | None, str | None, str, str | None], Awaitable[bool]]
# a hook's peer address -> the PBX at that address, if exactly one is
PbxOf = Callable[[str | None], Awaitable[str | None]]
# (uniqueid, pbx) -> True once the channel is known (waits, bounded, for its AMI events)
Sighted = Callable[[str, str | None], Awaitable[bool]]


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    buf = b""
    async with asyncio.timeout(HEADER_TIMEOUT):
        while b"\n\n" not in buf:
            chunk = await reader.read(1024)
            if not chunk:
                raise ConnectionError("AGI peer closed before sending its headers")
            buf += chunk
            if len(buf) > MAX_HEADER_BYTES:
                raise ConnectionError("AGI headers over 16 KiB")
    head = buf.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    return dict(line.split(": ", 1) for line in head.split("\n") if ": " in line)


class AgiServer:
    def __init__(self, attach: AttachFn, *, host: str = "127.0.0.1", port: int = 4573,
                 wrapup: WrapupFn | None = None, pbx_of: PbxOf | None = None,
                 sighted: Sighted | None = None) -> None:
        """``sighted(uniqueid, pbx)``: for a hook naming a channel ``attach`` did not find,
        waits (bounded) until the channel's own AMI events have been handled; True when it is
        known then. On a busy agent a hook can overtake its channel's Newchannel event."""
        self.attach = attach
        self.sighted = sighted
        self.wrapup = wrapup
        self.pbx_of = pbx_of
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self.requests = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("agi_listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            headers = await _read_headers(reader)
            self.requests += 1
            args = [v for k, v in sorted(headers.items()) if k.startswith("agi_arg_")]
            route, tags, variables = parse_hook(headers.get("agi_network_script", ""), args)
            if route in ("disposition", "wrapup"):
                await self._wrapup(headers, variables, reader, writer)
                return
            if route not in ("tag", "var", "attach"):
                log.warning("agi_unknown_route", route=route)
                return
            uniqueid = headers.get("agi_uniqueid", "")
            channel = headers.get("agi_channel", "")
            # names the PBX: not a variable of the call
            pbx = variables.pop("pbx", None) or await self._pbx_of(writer)
            found = self.attach(uniqueid, channel, tags, variables, pbx)
            if not found and uniqueid and self.sighted is not None \
                    and await self.sighted(uniqueid, pbx):
                found = self.attach(uniqueid, channel, tags, variables, pbx)
            request = Request(app=None, headers=headers, reader=reader, writer=writer)
            for name, value in variables.items():
                await request.send_command(f'SET VARIABLE __{name} "{_quote(value)}"')
            await request.send_command(f"SET VARIABLE AFTERCALL_ATTACHED {1 if found else 0}")
            log.info("agi_attached", uniqueid=uniqueid, tags=list(tags), vars=sorted(variables),
                     found=found)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as e:
            log.warning("agi_request_failed", error=str(e))
        finally:
            with contextlib.suppress(Exception):
                writer.close()


    async def _wrapup(self, headers: dict[str, str], params: Mapping[str, str],
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        code = clean_code(params.get("code"))
        took = False
        if code is None:
            log.warning("agi_wrapup_refused", reason="code missing or not 1-32 of A-Z 0-9 _.-")
        elif self.wrapup is not None:
            took = await self.wrapup(code, params.get("call"), params.get("agent"),
                                     headers.get("agi_channel", ""),
                                     params.get("pbx") or await self._pbx_of(writer))
        request = Request(app=None, headers=headers, reader=reader, writer=writer)
        await request.send_command(f"SET VARIABLE AFTERCALL_WRAPUP {1 if took else 0}")
        log.info("agi_wrapup", code=code, call_id=params.get("call"), took=took)


    async def _pbx_of(self, writer: asyncio.StreamWriter) -> str | None:
        """The PBX the hook came from, by its address (``pbx_of``); None when not one."""
        if self.pbx_of is None:
            return None
        peer = writer.get_extra_info("peername")
        pbx = await self.pbx_of(str(peer[0]) if peer else None)
        if pbx is not None:
            log.debug("agi_pbx_by_address", pbx=pbx)
        return pbx


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
