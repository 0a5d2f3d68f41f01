"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb, pg_ctl, a free loopback port.

Debian's ``postgresql`` package (installed by ``make setup``) provides the binaries under
/usr/lib/postgresql/N/bin; the cluster lives in a directory the caller owns and is removed by
``stop``. PostgreSQL refuses to run as root, so when we are root the cluster is created and run
as ``nobody``: then its directory is a private one in the system temp dir (pytest's own temp
tree is root-only, and every pytest run resets it so), handed over to ``nobody``."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from agent.errors import LabError
from agent.lab.procs import alive

SUPERUSER = "aftercall"


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian layout), or PATH's initdb."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise LabError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
        "run `make setup` or apt-get install postgresql"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TempCluster:
    """``with TempCluster(dir) as pg: pg.create_database("x") -> url``. ``durable=False`` turns
    fsync off: the tests check semantics, not power-loss safety, and it makes them quick."""

    root: Path
    durable: bool = False
    port: int = 0
    #: extra server settings, ``name=value`` (e.g. ``shared_preload_libraries=pg_stat_statements``)
    settings: tuple[str, ...] = ()
    run_as: str | None = None
    _bindir: Path = field(default_factory=pg_bindir)
    _started: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @classmethod
    def under(cls, base: Path, **kw: object) -> TempCluster:
        """A cluster in ``base``, or, when we are root, in a fresh private directory that the
        unprivileged user can reach."""
        if os.geteuid() == 0:
            reap_orphans(Path(tempfile.gettempdir()))
            return cls(Path(tempfile.mkdtemp(prefix="aftercall-pg-")), **kw)  # type: ignore[arg-type]
        return cls(base, **kw)  # type: ignore[arg-type]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = self.run_as
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self.root,
            check=False,
        )

    def _check(self, proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            log = self.root / "postgres.log"
            if log.exists():
                tail += "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            raise LabError(f"PostgreSQL {what} failed ({self.root}):\n{tail}")

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        # Whose cluster this is: a session killed before its teardown leaves the server
        # running, and the next session stops it (reap_orphans) once this process is gone.
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
        if os.geteuid() == 0 and self.run_as is None:
            self.run_as = "nobody"
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._check(
                self._run(
                    str(self._bindir / "initdb"),
                    "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                    "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
                ),
                "initdb",
            )
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
            "-c shared_buffers=64MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {setting}" for setting in self.settings]
        for attempt in range(5):
            self.port = free_port()
            proc = self._run(
                str(self._bindir / "pg_ctl"), "-D", str(self.data), "-l",
                str(self.root / "postgres.log"), "-w", "-t", "60", "-o",
                " ".join([f"-p {self.port}", *options]), "start",
            )
            if proc.returncode == 0:
                self._started = True
                return self
            log = self.root / "postgres.log"
            said = log.read_text(errors="replace") if log.exists() else ""
            if attempt == 4 or "could not bind" not in said:
                self._check(proc, "start")
        return self  # unreachable

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = self._run(
            str(self._bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql,
        )
        self._check(proc, f"psql {sql[:40]!r}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self, *, remove: bool = True) -> None:
        if self._started and self.data.exists():  # (reap_orphans may have removed it)
            self._run(str(self._bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
            self._started = False
        if remove:
            # Created by nobody: root removes it; as an ordinary user it is ours anyway.
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()



OWNER_FILE = "owner.pid"


def reap_orphans(tmp: Path) -> list[Path]:
    """Stop and remove the throwaway clusters under ``tmp`` whose owning process has died
    (a test session killed by a timeout never ran its teardown). Clusters without an owner
    file, or whose owner still runs, are left alone."""
    reaped = []
    for root in tmp.glob("aftercall-pg-*"):
        try:
            pid = int((root / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if alive(pid):
            continue
        data = root / "data"
        if (data / "postmaster.pid").exists():
            owner = root.stat().st_uid
            subprocess.run(
                [str(pg_bindir() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False, cwd=root,
                user=owner if os.geteuid() == 0 else None,
                group=pwd.getpwuid(owner).pw_gid if os.geteuid() == 0 else None,
                extra_groups=[] if os.geteuid() == 0 else None,
            )
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped
