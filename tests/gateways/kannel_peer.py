"""Debian's Kannel (bearerbox + smsbox) as a real peer for tests: gateway_conf/kannel.conf with
free ports, started and stopped by the fixture, ready when its SMSC link is online."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

SAMPLE = Path(__file__).parent.parent.parent / "gateway_conf" / "kannel.conf"
ADMIN_PASSWORD = "change-me-admin"
USERNAME, PASSWORD = "aftercall", "secret"  # the sample's sendsms-user


def ensure_installed() -> None:
    """Kannel comes from Debian's archive; `make test` installs it (Makefile APT_PACKAGES), and
    a test run on a machine without it installs it here rather than skipping."""
    if shutil.which("bearerbox") and shutil.which("smsbox"):
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "kannel"],
                   check=True, capture_output=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(sample: str, overrides: Mapping[str, Mapping[str, str]]) -> str:
    """The sample with ``key = value`` lines replaced (or added) in the first group of each
    named kind (``core``, ``smsc``, ``smsbox``, ``sendsms-user``, ``sms-service``)."""
    blocks = re.split(r"\n(?=group = )", sample)
    done: set[str] = set()
    out: list[str] = []
    for block in blocks:
        m = re.match(r"group = (\S+)", block)
        kind = m.group(1) if m else ""
        if kind in overrides and kind not in done:
            done.add(kind)
            for key, value in overrides[kind].items():
                line = f"{key} = {value}"
                pattern = re.compile(rf"^#?\s*{re.escape(key)} = .*$", re.MULTILINE)
                block, n = pattern.subn(line.replace("\\", "\\\\"), block, count=1)
                if not n:  # right under "group = ...": a blank line would end the group
                    head, _, rest = block.partition("\n")
                    block = f"{head}\n{line}\n{rest}"
        out.append(block)
    return "\n".join(out)


@dataclass
class Kannel:
    sendsms_url: str
    admin_url: str
    workdir: Path

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.workdir.glob("*.log")))


@contextlib.asynccontextmanager
async def running_kannel(workdir: Path, smsc_port: int, *, smsc_user: str, smsc_password: str,
                         extra: Mapping[str, Mapping[str, str]] | None = None,
                         ) -> AsyncIterator[Kannel]:
    """bearerbox and smsbox on free ports, the SMSC link to ``127.0.0.1:smsc_port``."""
    ensure_installed()
    admin, box, sendsms = free_port(), free_port(), free_port()
    overrides: dict[str, dict[str, str]] = {
        "core": {"admin-port": str(admin), "smsbox-port": str(box),
                 "log-file": f'"{workdir}/bearerbox.log"', "access-log": f'"{workdir}/access.log"'},
        "smsc": {"port": str(smsc_port), "smsc-username": smsc_user,
                 "smsc-password": smsc_password},
        "smsbox": {"bearerbox-port": str(box), "sendsms-port": str(sendsms),
                   "log-file": f'"{workdir}/smsbox.log"'},
    }
    for kind, keys in (extra or {}).items():
        overrides.setdefault(kind, {}).update(keys)
    conf = workdir / "kannel.conf"
    conf.write_text(render(SAMPLE.read_text(), overrides))
    procs: list[asyncio.subprocess.Process] = []
    try:
        kannel = Kannel(f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms",
                        f"http://127.0.0.1:{admin}", workdir)
        for box_name in ("bearerbox", "smsbox"):
            out = (workdir / f"{box_name}.out").open("wb")
            procs.append(await asyncio.create_subprocess_exec(
                box_name, "-v", "4", str(conf), stdout=out, stderr=subprocess.STDOUT))
            if box_name == "bearerbox":  # smsbox gives up at once if bearerbox is not there yet
                await _wait_port(box, kannel, procs)
        await _wait_ready(kannel, procs)
        yield kannel
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _wait_port(port: int, kannel: Kannel, procs: list[asyncio.subprocess.Process],
                     timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if procs[-1].returncode is not None:
            raise RuntimeError(f"Kannel exited ({procs[-1].returncode}):\n{kannel.log()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise RuntimeError(f"bearerbox not listening within {timeout}s:\n{kannel.log()}")
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


async def _wait_ready(kannel: Kannel, procs: list[asyncio.subprocess.Process],
                      timeout: float = 20.0) -> None:
    """Until the SMSC link is online and smsbox answers sendsms (a request without credentials
    is refused with 403 once smsbox is up)."""
    status_url = f"{kannel.admin_url}/status.txt?password={ADMIN_PASSWORD}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            for proc in procs:
                if proc.returncode is not None:
                    raise RuntimeError(f"Kannel exited ({proc.returncode}):\n{kannel.log()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(status_url) as r:
                    status = await r.text()
                async with http.get(kannel.sendsms_url) as r2:
                    sendsms_up = r2.status in (400, 403)
                if "online" in status and "smsc1" in status and sendsms_up:
                    return
            if loop.time() > deadline:
                raise RuntimeError(f"Kannel not ready within {timeout}s:\n{kannel.log()}")
            await asyncio.sleep(0.1)
