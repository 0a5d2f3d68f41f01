#!/usr/bin/env python3
"""A Docker engine and Debian base images for the compose stack, on machines with no registry.

Used by `make images-base` and by tests/compose/. Standard library only (it runs before the
project's virtualenv exists). As root, on Debian:

- an engine: the one DOCKER_HOST or the default socket names, if it answers; otherwise Debian's
  docker.io is installed (once) and a private dockerd is started on its own socket, with its
  data root under the cache directory (vfs storage, host networking only), and stopped after;
- base images: Debian roots made with debootstrap (cached under the cache directory), imported
  under local tags (``aftercall-base/debian:bookworm``, ``aftercall-base/debian:sid``) when the
  engine does not have them. The Dockerfiles take them as the build argument BASE_IMAGE; with
  a registry, their default is the public debian image. The local roots carry this machine's
  CA bundle (pip behind a TLS-inspecting proxy) and accept a snapshot mirror's expired Release.

    python3 docker/engine.py images-base     # engine + base images; prints the build args
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("AFTERCALL_LAB_DIR", "/var/cache/aftercall"))
#: Where the private engine keeps its state: images and the layer cache persist between runs.
PRIVATE_DATA = CACHE / "docker"
#: Runtime files of the private engine (socket, pid file, containerd's state): short paths, as a
#: unix socket path is limited to 108 bytes.
PRIVATE_RUN = Path(os.environ.get("AFTERCALL_DOCKER_RUN", "/run/aftercall-docker"))
DEFAULT_SOCKET = "/var/run/docker.sock"

#: suite -> (local tag, the compose variable that hands it to the Dockerfiles, public default).
BASES = {
    "bookworm": ("aftercall-base/debian:bookworm", "AFTERCALL_BASE_BOOKWORM", "debian:bookworm-slim"),
    "sid": ("aftercall-base/debian:sid", "AFTERCALL_BASE_SID", "debian:sid-slim"),
}


class EngineError(RuntimeError):
    """The engine could not be found, installed or started; the message says what to do."""


def log(msg: str) -> None:
    print(f"engine: {msg}", file=sys.stderr, flush=True)


# -- finding an engine -----------------------------------------------------------------------------
def _ping(socket_path: str, timeout: float = 3.0) -> bool:
    """GET /_ping over a unix socket: does a Docker engine answer there?"""

    class _Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(socket_path)

    conn = _Conn("localhost", timeout=timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _host_answers(docker_host: str) -> bool:
    if docker_host.startswith("unix://"):
        return _ping(docker_host.removeprefix("unix://"))
    # tcp:// or ssh:// engines: ask a client, if there is one.
    client = shutil.which("docker")
    if client is None:
        return False
    r = subprocess.run([client, "-H", docker_host, "version", "--format", "{{.Server.Version}}"],
                       check=False, capture_output=True, timeout=30)
    return r.returncode == 0


def _debian_client() -> str | None:
    """Debian's docker client, when docker.io is installed (not whatever is first on PATH)."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "docker.io"], check=False,
                       capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.endswith("installed") and Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    return None


def install_docker_io() -> str:
    """apt-get install docker.io without starting Debian's system-wide daemon; returns the client."""
    if (client := _debian_client()) is not None:
        return client
    if os.geteuid() != 0:
        raise EngineError("no Docker engine answers and installing docker.io needs root")
    log("installing Debian's docker.io (once) ...")
    # policy-rc.d 101: the package's init script must not start a system dockerd (iptables,
    # overlayfs) as a side effect; ours is private and started below.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"]):
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise EngineError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n"
                                  + "\n".join(r.stdout.splitlines()[-10:] + r.stderr.splitlines()[-10:]))
    finally:
        if ours:
            policy.unlink()
    client = _debian_client()
    if client is None:
        raise EngineError("docker.io installed but /usr/bin/docker is missing")
    return client


@dataclass
class Engine:
    """A Docker engine the caller may use: run ``docker`` as ``cmd(...)`` with ``env``."""

    client: str
    host: str
    private: bool = False
    pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "DOCKER_HOST": self.host}

    def run(self, *args: str, check: bool = True, timeout: float = 600,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([self.client, *args], env=self.env, check=False, capture_output=True,
                           text=input is None, input=input, timeout=timeout)
        if check and r.returncode != 0:
            err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
            raise EngineError(f"docker {' '.join(args[:3])} failed (exit {r.returncode}): {err.strip()}")
        return r  # type: ignore[return-value]

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def version(self) -> str:
        return self.run("version", "--format", "{{.Server.Version}}").stdout.strip()


def _existing_engine() -> Engine | None:
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not _host_answers(host):
        return None
    client = _debian_client() or shutil.which("docker")
    if client is None:
        # An engine without a client here: Debian's client comes with docker.io.
        client = install_docker_io()
    return Engine(client=client, host=host)


def _start_private(client: str, timeout: float = 60.0) -> Engine:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    sock = PRIVATE_RUN / "docker.sock"
    pidfile = PRIVATE_RUN / "dockerd.pid"
    host = f"unix://{sock}"
    if _ping(str(sock)):
        # Left by a run that was killed: still ours to use, and to stop.
        pid = _read_pid(pidfile)
        log(f"reusing the private dockerd on {sock} (pid {pid})")
        return Engine(client=client, host=host, private=True, pid=pid)
    PRIVATE_DATA.mkdir(parents=True, exist_ok=True)
    PRIVATE_RUN.mkdir(parents=True, exist_ok=True)
    logfile = CACHE / "dockerd.log"
    log(f"starting a private dockerd on {sock} (data in {PRIVATE_DATA}, log {logfile})")
    with logfile.open("ab") as out:
        proc = subprocess.Popen(
            [dockerd, "--storage-driver=vfs", "--iptables=false", "--ip6tables=false",
             "--bridge=none", f"--data-root={PRIVATE_DATA}", f"--exec-root={PRIVATE_RUN / 'exec'}",
             f"--pidfile={pidfile}", "-H", host],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(f"dockerd exited with status {proc.returncode} while starting; "
                              f"last lines of {logfile}:\n{_tail(logfile, 15)}")
        if _ping(str(sock), timeout=1.0):
            return Engine(client=client, host=host, private=True, pid=proc.pid)
        time.sleep(0.2)
    _stop_pid(proc.pid)
    raise EngineError(f"dockerd did not answer on {sock} within {timeout:.0f}s; "
                      f"last lines of {logfile}:\n{_tail(logfile, 15)}")


def stop(engine: Engine, timeout: float = 30.0) -> None:
    """Stop a private engine (its containers stop with it); an existing engine is left alone."""
    if engine.private and engine.pid is not None:
        _stop_pid(engine.pid, timeout)


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """An engine for the duration of the block: an existing one, or a private one we stop."""
    found = _existing_engine()
    if found is not None:
        log(f"using the engine at {found.host} (Docker {found.version()})")
        yield found
        return
    client = install_docker_io()
    private = _start_private(client)
    try:
        log(f"private engine up (Docker {private.version()})")
        yield private
    finally:
        stop(private)


# -- base images -------------------------------------------------------------------------------------
def debootstrap_root(suite: str) -> tuple[Path, float]:
    """A minbase Debian root of ``suite``, built once and cached; returns (root, seconds spent)."""
    root = CACHE / "images" / f"debian-{suite}"
    if (root / ".aftercall-ok").exists():
        return root, 0.0
    if shutil.which("debootstrap") is None:
        raise EngineError("debootstrap is not installed: apt-get install debootstrap (make apt)")
    tmp = root.with_name(root.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {suite} into {root} (once) ...")
    t0 = time.monotonic()
    out = root.with_name(root.name + ".log")
    with out.open("wb") as fh:
        rc = subprocess.call(["debootstrap", "--variant=minbase", suite, str(tmp)],
                             stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise EngineError(f"debootstrap {suite} failed (exit {rc}); the Debian mirror may be "
                          f"unreachable. Last lines of {out}:\n{_tail(out, 15)}")
    for d in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for f in (tmp / d).glob("*"):
            if f.is_file():
                f.unlink()
    (tmp / ".aftercall-ok").write_text("ok\n")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root, time.monotonic() - t0


def _local_settings(root: Path) -> None:
    """What makes a local base image work on this machine, written before each import (so cached
    roots get it too): apt settings, and this machine's certificate authorities."""
    conf = root / "etc/apt/apt.conf.d"
    # As Debian's official images do: no package cache kept in the layers built on top.
    (conf / "docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
    # The mirror a machine reaches may be a snapshot whose sid Release file has expired (the lab
    # root is updated the same way); only these local images carry this, never the public ones.
    (conf / "99aftercall-snapshot").write_text('Acquire::Check-Valid-Until "false";\n')
    # Builds fetch from PyPI over TLS; where this machine reaches it through a TLS-inspecting
    # proxy, only this machine's CA bundle verifies it. pip in the images reads /etc/pip.conf; the
    # extra CAs also go where Debian's ca-certificates picks them up if an image installs it.
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        dst = root / "usr/local/share/aftercall/ca-certificates.crt"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, dst)
        (root / "etc/pip.conf").write_text(f"[global]\ncert = /{dst.relative_to(root)}\n")
    extra = Path("/usr/local/share/ca-certificates")
    for crt in extra.rglob("*.crt") if extra.is_dir() else ():
        target = root / crt.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(crt, target)


def import_root(eng: Engine, root: Path, tag: str) -> None:
    """tar the root into ``docker import`` (the root's own files only: no cache marker)."""
    _local_settings(root)
    tar = subprocess.Popen(["tar", "-C", str(root), "--exclude=./.aftercall-ok", "-c", "."],
                           stdout=subprocess.PIPE)
    imp = subprocess.run([eng.client, "import", "--change", "CMD [\"bash\"]", "-", tag],
                         stdin=tar.stdout, env=eng.env, check=False, capture_output=True, text=True)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or imp.returncode != 0:
        raise EngineError(f"importing {root} as {tag} failed: {imp.stderr.strip()}")


def base_images(eng: Engine, suites: tuple[str, ...] = tuple(BASES)) -> dict[str, str]:
    """Make sure every base image exists in ``eng``; returns the compose variables naming them."""
    env: dict[str, str] = {}
    for suite in suites:
        tag, variable, _public = BASES[suite]
        if not eng.has_image(tag):
            root, spent = debootstrap_root(suite)
            t0 = time.monotonic()
            import_root(eng, root, tag)
            log(f"{tag}: debootstrap {spent:.0f}s, import {time.monotonic() - t0:.0f}s")
        env[variable] = tag
    return env


# -- helpers -----------------------------------------------------------------------------------------
def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_pid(pid: int, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if argv != ["images-base"]:
        print(__doc__, file=sys.stderr)
        return 64
    try:
        with engine() as eng:
            for variable, tag in base_images(eng).items():
                print(f"{variable}={tag}")
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
