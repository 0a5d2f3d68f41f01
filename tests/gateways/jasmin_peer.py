"""Jasmin SMS Gateway 0.11 as a real peer for tests: its own virtualenv (cached), private Redis and
RabbitMQ from Debian's archive on free ports, jasmind configured through jCli; all started and
stopped by the fixture."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Jasmin pins Twisted 23.10, cryptography 41 and friends: it lives in a virtualenv of its own,
# built once per machine (about 20 s) and kept with the other slow builds. 0.11.0, not 0.11.1:
# 0.11.1's SMPP client fails on every submit_sm_resp ("'SubmitSM' object has no attribute
# 'response'", jookies/jasmin#1218), so it never maps the SMSC's message id and drops every
# delivery receipt as "DLRMapNotFound".
JASMIN_REQ = "jasmin>=0.11.0,<0.11.1"
CACHE = Path(os.environ.get("AFTERCALL_CACHE", "/var/cache/aftercall"))
VENV = CACHE / "jasmin-0.11.0"
APT = ("rabbitmq-server", "redis-server")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")

USERNAME, PASSWORD = "aftercall", "jpw2024"  # the Jasmin user the agent's preset logs in as
CONNECTOR = "sim"  # the SMPP client connector to the simulator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_installed() -> Path:
    """RabbitMQ and Redis from Debian (`make test` installs them: Makefile APT_PACKAGES; a run
    without them installs them here rather than skipping), Jasmin from PyPI in its own venv.
    Returns the venv's AMQP 0-9-1 spec, which the wheel does not ship (the sdist's
    misc/config/resource has it)."""
    if not (shutil.which("redis-server") and (RABBIT_BIN / "rabbitmq-server").exists()):
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT],
                       check=True, capture_output=True, env=env)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    # Test runs in other worktrees share the cache: one builds, the others wait for it.
    with (VENV.parent / "jasmin.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_venv()


def _ensure_venv() -> Path:
    spec = VENV / "amqp0-9-1.xml"
    marker = VENV / ".installed"
    if marker.exists() and marker.read_text() == JASMIN_REQ and spec.exists():
        return spec
    shutil.rmtree(VENV, ignore_errors=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([sys.executable, "-m", "venv", str(VENV)])
    _run([*pip, "install", JASMIN_REQ])
    sdist = VENV / "sdist"
    _run([*pip, "download", "--no-deps", "--no-binary", ":all:", "-d", str(sdist), JASMIN_REQ])
    [archive] = sdist.glob("jasmin-*.tar.gz")
    with tarfile.open(archive) as tar:
        [member] = [m for m in tar.getmembers()
                    if m.name.endswith("misc/config/resource/amqp0-9-1.xml")]
        extracted = tar.extractfile(member)
        assert extracted is not None
        spec.write_bytes(extracted.read())
    shutil.rmtree(sdist)
    marker.write_text(JASMIN_REQ)
    return spec


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


JASMIN_CFG = """\
[smpp-server]
bind = 127.0.0.1
port = {smpps}
[smpp-server-pb]
bind = 127.0.0.1
port = {smpps_pb}
[client-management]
bind = 127.0.0.1
port = {cm}
[router]
bind = 127.0.0.1
port = {router}
[amqp-broker]
host = 127.0.0.1
port = {amqp}
spec = {spec}
[redis-client]
host = 127.0.0.1
port = {redis}
[http-api]
bind = 127.0.0.1
port = {http}
[jcli]
bind = 127.0.0.1
port = {jcli}
authentication = False
[dlr]
# A receipt can overtake the submit_sm_resp's id mapping (the simulator answers in 50 ms);
# Jasmin looks it up again after this delay (10 s by default).
dlr_lookup_retry_delay = 1
[dlr-thrower]
retry_delay = 1
max_retries = 3
[deliversm-thrower]
retry_delay = 1
max_retries = 3
"""


@dataclass
class Jasmin:
    send_url: str
    jcli_port: int
    workdir: Path

    def logs_text(self) -> str:
        """Everything every part wrote (for 'no secret in the logs' checks)."""
        files = list((self.workdir / "log").rglob("*")) + list(self.workdir.glob("*.out"))
        return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())

    async def jcli(self, *commands: str) -> str:
        return await jcli(self.jcli_port, commands)


class _Procs:
    """The processes one peer started, stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []
        self.outputs: list[BinaryIO] = []

    async def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        out = (self.workdir / f"{name}.out").open("wb")
        self.outputs.append(out)
        # A session of its own: RabbitMQ's start script runs erl as a child, and a stop must
        # reach the whole group, never anything else on the machine.
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT,
                                                    env=env, start_new_session=True)
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.returncode is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.workdir.rglob("*.out"))
                         + sorted(self.workdir.glob("log/*.log")))

    async def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, 9)
                    await proc.wait()
        for out in self.outputs:
            out.close()


async def _wait_port(port: int, procs: _Procs, what: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        procs.check()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise RuntimeError(f"{what} not listening within {timeout}s:\n{procs.tail()}")
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return


def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


async def _start_redis(procs: _Procs, workdir: Path) -> int:
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    await procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--dir", str(data), "--save", "", "--appendonly", "no"],
                      _base_env(workdir))
    await _wait_port(port, procs, "redis", 10)
    return port


async def _start_rabbitmq(procs: _Procs, workdir: Path) -> int:
    """A private node: its own epmd, node name, ports, Mnesia and logs; the Debian service (and
    its /etc/rabbitmq settings) untouched."""
    base = workdir / "rabbitmq"
    base.mkdir()
    (base / "enabled_plugins").write_text("[].\n")
    (base / "env.conf").write_text("")
    epmd, amqp, dist = free_port(), free_port(), free_port()
    env = {**_base_env(base), "ERL_EPMD_PORT": str(epmd)}
    await procs.start("epmd", ["epmd", "-port", str(epmd), "-address", "127.0.0.1"], env)
    await _wait_port(epmd, procs, "epmd", 10)
    env.update({
        "RABBITMQ_NODENAME": f"aftercall{amqp}@localhost", "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp), "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "env.conf"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),  # none: the defaults
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(base / "pid"), "RABBITMQ_LOGS": "-",
    })
    await procs.start("rabbitmq", [str(RABBIT_BIN / "rabbitmq-server")], env)
    await _wait_port(amqp, procs, "rabbitmq", 60)
    return amqp


# jasmind takes a machine-wide lock, /tmp/jasmind, and quits ("Lock not acquired !", exit 0)
# when another jasmind holds it: two test runs at once (two worktrees) would fail each other.
# It guards the shared /etc/jasmin store, and each peer has a store of its own: lock there.
_JASMIND = """\
import lockfile, os, runpy, sys
_FileLock = lockfile.FileLock
lockfile.FileLock = lambda path, *a, **kw: _FileLock(os.environ["JASMIN_LOCK"], *a, **kw)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@contextlib.asynccontextmanager
async def running_jasmin(workdir: Path, smsc_port: int, *, smsc_user: str, smsc_password: str,
                         mo_url: str | None = None) -> AsyncIterator[Jasmin]:
    """Redis, RabbitMQ and jasmind on free ports; jCli adds an SMPP client connector to
    ``127.0.0.1:smsc_port``, a group and the user ``USERNAME``, a default MT route to the
    connector, and (with ``mo_url``) an HTTP client connector with a default MO route to it."""
    spec = ensure_installed()
    procs = _Procs(workdir)
    try:
        redis = await _start_redis(procs, workdir)
        amqp = await _start_rabbitmq(procs, workdir)
        root = workdir / "jasmin"
        (root / "etc" / "jasmin" / "store").mkdir(parents=True)
        ports = {k: free_port() for k in ("smpps", "smpps_pb", "cm", "router", "http", "jcli")}
        cfg = root / "jasmin.cfg"
        cfg.write_text(JASMIN_CFG.format(amqp=amqp, redis=redis, spec=spec, **ports))
        env = {**_base_env(root), "ROOT_PATH": str(root), "LOG_PATH": str(workdir / "log")}
        env["JASMIN_LOCK"] = str(root / "jasmind")
        await procs.start("jasmind", [
            str(VENV / "bin" / "python"), "-c", _JASMIND, str(VENV / "bin" / "jasmind.py"),
            "-c", str(cfg),
            # The throwers need the SMPP server (they also serve its users): keep it, on a free port.
            # One process: the DLR lookup and thrower in jasmind rather than dlrd/dlrlookupd
            # (the deliver_sm thrower is on by default in 0.11.0).
            "--enable-dlr-thrower", "--enable-dlr-lookup"], env)
        await _wait_port(ports["jcli"], procs, "jasmin jcli", 30)
        jasmin = Jasmin(f"http://127.0.0.1:{ports['http']}/send", ports["jcli"], workdir)
        commands = [
            "smppccm -a", f"cid {CONNECTOR}", "host 127.0.0.1", f"port {smsc_port}",
            f"username {smsc_user}", f"password {smsc_password}", "submit_throughput 0", "ok",
            "group -a", "gid customers", "ok",
            "user -a", f"username {USERNAME}", f"password {PASSWORD}", "gid customers",
            "uid u1", "ok",
            "mtrouter -a", "type defaultroute", f"connector smppc({CONNECTOR})", "rate 0", "ok",
        ]
        if mo_url:
            commands += ["httpccm -a", "cid agent", f"url {mo_url}", "method POST", "ok",
                         "morouter -a", "type defaultroute", "connector http(agent)", "ok"]
        commands.append(f"smppccm -1 {CONNECTOR}")
        out = await jasmin.jcli(*commands)
        if "Successfully added" not in out or "Error" in out or "Unknown" in out:
            raise RuntimeError(f"jCli refused the configuration:\n{out}\n{procs.tail()}")
        await _wait_bound(jasmin, procs)
        yield jasmin
    finally:
        await procs.stop()


_IAC = re.compile(rb"\xff[\xfb-\xfe].|\xff[\xf0-\xfa]", re.DOTALL)
_PROMPT = re.compile(rb"(jcli : |> )$")
_WELCOME = re.compile(rb"Session ref: \d+\s*$")  # the first prompt comes after the first line


async def jcli(port: int, commands: Sequence[str], timeout: float = 15.0) -> str:
    """Run jCli commands (Jasmin's telnet console) one by one; each waits for the next prompt."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buf = b""

    async def until(pattern: re.Pattern[bytes]) -> str:
        nonlocal buf
        while True:
            clean = _IAC.sub(b"", buf)
            if pattern.search(clean):
                buf = b""
                return clean.decode(errors="replace").replace("\r", "")
            chunk = await reader.read(4096)
            if not chunk:
                raise RuntimeError(f"jCli closed the connection:\n{clean.decode(errors='replace')}")
            buf += chunk

    out: list[str] = []
    try:
        out.append(await asyncio.wait_for(until(_WELCOME), timeout))
        for command in commands:
            writer.write(command.encode() + b"\r\n")
            await writer.drain()
            out.append(await asyncio.wait_for(until(_PROMPT), timeout))
        writer.write(b"quit\r\n")
        await writer.drain()
    finally:
        writer.close()
    return "".join(out)


async def _wait_bound(jasmin: Jasmin, procs: _Procs, timeout: float = 20.0) -> None:
    """Until the connector to the simulator is BOUND_TRX, so the first /send can be routed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        procs.check()
        out = await jasmin.jcli("smppccm -l")
        if re.search(rf"#{CONNECTOR}\s+started\s+BOUND_TRX", out):
            return
        if loop.time() > deadline:
            raise RuntimeError(f"connector not bound within {timeout}s:\n{out}\n{procs.tail()}")
        await asyncio.sleep(0.2)
