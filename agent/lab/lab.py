"""The local lab: Debian's Asterisk in a cached sid root, run under chroot on loopback (the
files installed into the root: ``agent.lab.files``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import LabError
from agent.lab import procs
from agent.lab.files import (  # noqa: F401 - the lab's names, where its users import them
    AGI_DIR,
    DEFAULT_DIALPLAN,
    REPO_CONF,
    RESTART_FILES,
    SECRET_CONF,
    STOCK_FILES,
    LabFiles,
    dialplans,
    probe_context,
)

DEFAULT_HOME = Path(os.environ.get("AFTERCALL_LAB_DIR", "/var/cache/aftercall"))
#: Debian packages of the lab root: Asterisk, and Python for the classic AGI script (pyst2).
PACKAGES = ("asterisk", "python3")
PORTS = {"AMI": ("tcp", 5038), "PJSIP": ("udp", 5060)}


@dataclass(frozen=True)
class Lab(LabFiles):
    """Paths of one lab. ``home`` holds the cached root, the AMI secret and the pid file."""

    home: Path = DEFAULT_HOME
    conf: Path = REPO_CONF
    suite: str = "sid"

    @property
    def root(self) -> Path:
        return self.home / "sid-asterisk"

    @property
    def pidfile(self) -> Path:
        return self.home / "asterisk.pid"

    @property
    def secret_file(self) -> Path:
        return self.home / "ami_secret"

    @property
    def console_log(self) -> Path:
        return self.home / "asterisk.out"

    @property
    def cdr_csv(self) -> Path:
        return self.root / "var/log/asterisk/cdr-csv/Master.csv"

    @property
    def dialplan_file(self) -> Path:
        return self.home / "dialplan"

    def dialplan(self) -> str:
        """The style the lab's /etc/asterisk was last installed with."""
        try:
            return self.dialplan_file.read_text().strip() or DEFAULT_DIALPLAN
        except OSError:
            return DEFAULT_DIALPLAN

    @property
    def messages_log(self) -> Path:
        return self.root / "var/log/asterisk/messages"

    # -- provisioning -------------------------------------------------------------------------

    def provisioned(self) -> bool:
        return (self.root / "usr/sbin/asterisk").exists() and (self.root / ".aftercall-ok").exists()

    def provision(self, log=print) -> float:
        """Build the sid root once (about a minute); returns the seconds it took (0 if cached)."""
        if self.provisioned():
            if not (self.root / "usr/bin/python3").exists():
                # A root cached before the classic AGI script existed: add Python once.
                t0 = time.monotonic()
                self._apt_install(["python3"], log=log)
                return time.monotonic() - t0
            return 0.0
        if os.geteuid() != 0:
            raise LabError("the lab needs root (debootstrap and chroot): run it with sudo or as root")
        if shutil.which("debootstrap") is None:
            raise LabError("debootstrap is not installed: apt-get install debootstrap")
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / "sid-asterisk.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        log(f"lab: building a Debian {self.suite} root with asterisk in {self.root} (once) ...")
        t0 = time.monotonic()
        out = self.home / "debootstrap.log"
        with out.open("wb") as fh:
            rc = subprocess.call(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                 self.suite, str(tmp)],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        if rc != 0 or not (tmp / "usr/sbin/asterisk").exists():
            tail = procs.tail(out, 15)
            raise LabError(
                f"debootstrap of Debian {self.suite} failed (exit {rc}); the Debian mirror may be "
                f"unreachable. Last lines of {out}:\n{tail}"
            )
        (tmp / ".aftercall-ok").write_text("ok\n")
        if self.root.exists():
            shutil.rmtree(self.root)
        tmp.rename(self.root)
        return time.monotonic() - t0

    def _apt_install(self, packages: list[str], log=print) -> None:
        log(f"lab: installing {' '.join(packages)} into {self.root} (once) ...")
        out = self.home / "apt.log"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with out.open("wb") as fh:
            # sid's Release files expire within days; the root's own lists are good enough.
            subprocess.call(["chroot", str(self.root), "apt-get", "-o",
                             "Acquire::Check-Valid-Until=false", "update"],
                            stdout=fh, stderr=subprocess.STDOUT, env=env)
            rc = subprocess.call(["chroot", str(self.root), "apt-get", "install", "-y",
                                  "--no-install-recommends", *packages],
                                 stdout=fh, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            raise LabError(f"apt-get install {' '.join(packages)} in the lab root failed "
                           f"(exit {rc}). Last lines of {out}:\n{procs.tail(out, 15)}")

    # -- running ------------------------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if procs.alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def secret(self) -> str:
        if not self.secret_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.secret_file.write_text(secrets.token_urlsafe(18))
            self.secret_file.chmod(0o600)
        return self.secret_file.read_text().strip()

    def up(self, *, timeout: float = 30.0, log=print,
           dialplan: str = DEFAULT_DIALPLAN) -> dict[str, float]:
        """Start Asterisk (provisioning first if needed) with the ``dialplan`` style. A running
        lab with another style, or whose installed files are no longer the repository's
        (asterisk_conf/ edited since), gets the files again and a reload; a restart if one
        of them is read only at start. Returns timings. Idempotent."""
        timings = {"provision_s": self.provision(log=log)}
        if self.running():
            _wait_ami(self, timeout)
            t0 = time.monotonic()
            stale = self.stale_files(dialplan)
            restart = sorted(RESTART_FILES.intersection(stale))
            if not restart:
                if self.dialplan() != dialplan or stale:
                    self.use_dialplan(dialplan, timeout=timeout)
                return timings | {"start_s": 0.0, "reload_s": time.monotonic() - t0}
            log(f"lab: {', '.join(restart)} changed since Asterisk started: restarting it")
            self.down()
        self._reap_strays()
        for name, (proto, port) in PORTS.items():
            if not procs.port_free(proto, port):
                raise LabError(
                    f"cannot start the lab: {name} port {port}/{proto} on 127.0.0.1 is already in "
                    f"use by another process (stop it, or `aftercall lab down` if it is an old lab)"
                )
        t0 = time.monotonic()
        self.install_conf(dialplan)
        if self.messages_log.exists():
            self.messages_log.unlink()
        with self.console_log.open("wb") as out:
            proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-f", "-n", "-g"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pidfile.write_text(str(proc.pid))
        try:
            _wait_ami(self, timeout, proc=proc)
            self._check_config_errors()
        except LabError:
            self.down()
            raise
        return timings | {"start_s": time.monotonic() - t0}

    def use_dialplan(self, dialplan: str, *, timeout: float = 30.0) -> None:
        """Switch a running lab to another dialplan style: new files and ``core reload``
        (seconds), not a new root or a restart."""
        self.install_conf(dialplan)
        mark = self.messages_log.stat().st_size if self.messages_log.exists() else 0
        out = self.cli("core reload", timeout=timeout)
        if "No such command" in out or "Unable to connect" in out:
            raise LabError(f"core reload failed: {out.strip()}")
        # core reload returns before every module has read its files; the dialplan and
        # the endpoints are what calls need.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ("There is no existence" not in self.cli("dialplan show " + probe_context(dialplan, self.conf))
                    and "username: aftercall" in self.cli("manager show user aftercall")):
                break
            time.sleep(0.1)
        else:
            raise LabError(f"dialplan {dialplan!r} not loaded within {timeout:.0f}s")
        self._check_config_errors(since=mark)

    def _check_config_errors(self, since: int = 0) -> None:
        # Asterisk starts even with a broken config file; the lab refuses to, loudly.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if "fully booted" in self.cli("core show version") + self.cli("core waitfullybooted"):
                break
        try:
            with self.messages_log.open("rb") as fh:
                fh.seek(since)
                recent = fh.read().decode(errors="replace")
        except OSError:
            recent = ""
        bad = [
            line
            for line in recent.splitlines()[-400:]
            if "ERROR" in line
            and any(k in line for k in ("config", "parse", "line", "Unable to load", ".conf"))
        ]
        if bad:
            raise LabError("Asterisk reported configuration errors:\n" + "\n".join(bad[-10:]))

    def cli(self, command: str, timeout: float = 10) -> str:
        r = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return r.stdout + r.stderr

    def down(self, *, timeout: float = 10.0) -> None:
        """Stop Asterisk and anything else left running in the root. Idempotent."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(Exception):
                self.cli("core stop now", timeout=5)
            procs.wait_gone(pid, timeout)
            if procs.alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                procs.wait_gone(pid, 5)
        self._reap_strays()
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def _reap_strays(self) -> None:
        if not self.root.exists():
            return
        root = str(self.root.resolve())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == root:
                    os.kill(int(entry.name), signal.SIGKILL)

    def status(self) -> dict[str, object]:
        return {
            "provisioned": self.provisioned(),
            "root": str(self.root),
            "running": self.running(),
            "pid": self.pid(),
            "ami": procs.ami_banner(1.0) is not None,
            "cdr_csv": str(self.cdr_csv),
            "dialplan": self.dialplan(),
        }


def _wait_ami(lab: Lab, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LabError(
                f"Asterisk exited with status {proc.returncode} while starting. Last lines:\n"
                f"{procs.tail(lab.console_log, 15)}\n{procs.tail(lab.messages_log, 15)}"
            )
        if procs.ami_banner(1.0) is not None:
            return
        time.sleep(0.1)
    raise LabError(
        f"AMI did not answer on 127.0.0.1:5038 within {timeout:.0f}s. Last lines:\n"
        f"{procs.tail(lab.console_log, 15)}\n{procs.tail(lab.messages_log, 15)}"
    )
