"""The local lab: Debian's Asterisk in a cached sid root, run under chroot on loopback."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import LabError
from agent.lab import procs

DEFAULT_HOME = Path(os.environ.get("AFTERCALL_LAB_DIR", "/var/cache/aftercall"))
REPO_CONF = Path(__file__).resolve().parents[2] / "asterisk_conf"
#: Debian packages of the lab root: Asterisk, and Python for the classic AGI script (pyst2).
PACKAGES = ("asterisk", "python3")
AGI_DIR = "usr/share/asterisk/agi-bin"  # astagidir in asterisk_conf/asterisk.conf
STOCK_FILES = ("cel.conf", "features.conf", "acl.conf", "udptl.conf", "pjproject.conf",
               "indications.conf", "ccss.conf")
PORTS = {"AMI": ("tcp", 5038), "PJSIP": ("udp", 5060)}
SECRET_CONF = "aftercall_secret.conf"  # the AMI secret, #included by manager.conf
#: Files Asterisk reads only when it starts: `core reload` does not apply a change to them.
RESTART_FILES = frozenset({"asterisk.conf", "modules.conf"})
#: The style of asterisk_conf/ itself; the others are asterisk_conf/dialplans/NAME/ overlays.
DEFAULT_DIALPLAN = "ours"


def dialplans(conf: Path = REPO_CONF) -> list[str]:
    """The lab's dialplan styles: ``ours`` and every directory of asterisk_conf/dialplans/."""
    styles = conf / "dialplans"
    extra = sorted(d.name for d in styles.iterdir() if d.is_dir()) if styles.is_dir() else []
    return [DEFAULT_DIALPLAN, *extra]


@dataclass(frozen=True)
class Lab:
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

    def conf_files(self, dialplan: str = DEFAULT_DIALPLAN) -> dict[Path, Path]:
        """What ``install_conf(dialplan)`` puts in the root: installed path -> its source
        (asterisk_conf/'s files, the style's .conf files over them, the AGI scripts)."""
        etc, agi_bin = self.root / "etc/asterisk", self.root / AGI_DIR
        files = {etc / f.name: f for f in self.conf.iterdir() if f.is_file()}
        if dialplan != DEFAULT_DIALPLAN:
            files |= {etc / f.name: f for f in (self.conf / "dialplans" / dialplan).iterdir()
                      if f.is_file() and f.suffix == ".conf"}
        agi = self.conf / "agi-bin"
        if agi.is_dir():
            files |= {agi_bin / f.name: f for f in agi.iterdir() if f.is_file()}
        return files

    def stale_files(self, dialplan: str = DEFAULT_DIALPLAN) -> list[str]:
        """The installed files that are not the sources' content (changed, missing, or left
        from a source since removed), by name; empty when the root has what
        ``install_conf(dialplan)`` would put there."""
        files = self.conf_files(dialplan)
        stale = []
        for dst, src in sorted(files.items()):
            try:
                if dst.read_bytes() != src.read_bytes():
                    stale.append(dst.name)
            except OSError:
                stale.append(dst.name)
        etc = self.root / "etc/asterisk"
        ours = {*STOCK_FILES, SECRET_CONF, ".aftercall-stock"}
        if etc.is_dir():
            stale += sorted(f.name for f in etc.iterdir()
                            if f.name not in ours and f not in files)
        return stale

    def install_agi(self) -> None:
        """The project's classic AGI scripts into astagidir, and the venv's pyst2 (with six)
        where the root's Python finds it: the same pinned library the project installs."""
        import asterisk.agi  # pyst2
        import six

        agi_bin = self.root / AGI_DIR
        agi_bin.mkdir(parents=True, exist_ok=True)
        for dst, src in self.conf_files().items():
            if dst.parent == agi_bin:
                shutil.copy2(src, dst)
                dst.chmod(0o755)
        site = self.root / "usr/local/lib/python3/dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        pkg = Path(asterisk.agi.__file__).parent
        shutil.rmtree(site / "asterisk", ignore_errors=True)
        shutil.copytree(pkg, site / "asterisk", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(six.__file__, site / "six.py")
        # Debian's python3 reads /usr/local/lib/python3.X/dist-packages: point it at ours.
        for lib in (self.root / "usr/lib").glob("python3.*"):
            if (lib / "os.py").exists():
                local = self.root / "usr/local/lib" / lib.name / "dist-packages"
                local.mkdir(parents=True, exist_ok=True)
                (local / "aftercall-pyst2.pth").write_text("/usr/local/lib/python3/dist-packages\n")

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

    def install_conf(self, dialplan: str = DEFAULT_DIALPLAN) -> None:
        if dialplan not in dialplans(self.conf):
            raise LabError(f"unknown dialplan {dialplan!r}; one of {', '.join(dialplans(self.conf))}")
        etc = self.root / "etc/asterisk"
        if not (etc / ".aftercall-stock").exists():
            # Keep Debian's samples out of the way: only the project's files configure the lab.
            stock = self.root / "etc/asterisk.stock"
            if not stock.exists():
                shutil.copytree(etc, stock)
            shutil.rmtree(etc)
            etc.mkdir()
            (etc / ".aftercall-stock").write_text("stock configs in /etc/asterisk.stock\n")
        for f in etc.iterdir():
            if f.name != ".aftercall-stock":
                if f.is_dir():
                    shutil.rmtree(f)
                else:
                    f.unlink()
        # Core files Asterisk always reads: Debian's stock versions are right for the lab.
        for name in STOCK_FILES:
            src = self.root / "etc/asterisk.stock" / name
            if src.exists():
                shutil.copy2(src, etc / name)
        for dst, src in self.conf_files(dialplan).items():
            if dst.parent == etc:
                shutil.copy2(src, dst)
        self.home.mkdir(parents=True, exist_ok=True)
        self.dialplan_file.write_text(dialplan + "\n")
        self.install_agi()
        (etc / SECRET_CONF).write_text(f"secret = {self.secret()}\n")
        (etc / SECRET_CONF).chmod(0o600)
        for d in ("var/lib/asterisk", "var/spool/asterisk", "var/log/asterisk", "var/run/asterisk",
                  "var/cache/asterisk", "var/log/asterisk/cdr-csv"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # The root's files belong to the chroot's asterisk user; the lab runs Asterisk as root.
        subprocess.call(["chown", "-R", "root:root", str(self.root / "var/lib/asterisk"),
                         str(self.root / "var/spool/asterisk"), str(self.root / "var/log/asterisk"),
                         str(self.root / "var/run/asterisk"), str(self.root / "var/cache/asterisk")])

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
            if ("There is no existence" not in self.cli("dialplan show " + _probe_context(dialplan, self.conf))
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


def _contexts(extensions_conf: Path) -> set[str]:
    try:
        text = extensions_conf.read_text(errors="replace")
    except OSError:
        return set()
    return set(re.findall(r"^\[([^\]()]+)\]", text, flags=re.M)) - {"general", "globals"}


def _probe_context(dialplan: str, conf: Path = REPO_CONF) -> str:
    """A context only that style's extensions.conf has (read from the files, not named
    here): once Asterisk shows it, the reload is done."""
    def file_of(style: str) -> Path:
        base = conf if style == DEFAULT_DIALPLAN else conf / "dialplans" / style
        return base / "extensions.conf"

    mine = _contexts(file_of(dialplan))
    others = set().union(*(_contexts(file_of(s)) for s in dialplans(conf) if s != dialplan))
    only = sorted(mine - others) or sorted(mine)
    if not only:
        raise LabError(f"dialplan {dialplan!r}: no context in {file_of(dialplan)}")
    return only[0]


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
