"""What the lab installs into its root: asterisk_conf/ (and a dialplan style's files over it),
the classic AGI scripts with the project's pyst2, and whether what is installed is still that."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import LabError

REPO_CONF = Path(__file__).resolve().parents[2] / "asterisk_conf"
AGI_DIR = "usr/share/asterisk/agi-bin"  # astagidir in asterisk_conf/asterisk.conf
STOCK_FILES = ("cel.conf", "features.conf", "acl.conf", "udptl.conf", "pjproject.conf",
               "indications.conf", "ccss.conf")
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


class LabFiles:
    """Mixin of ``Lab``: the root's configuration files. A mixin so that ``Lab`` stays one
    object with one set of paths."""

    if TYPE_CHECKING:  # set by Lab
        conf: Path
        home: Path

        @property
        def root(self) -> Path: ...

        @property
        def dialplan_file(self) -> Path: ...

        def secret(self) -> str: ...

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


def _contexts(extensions_conf: Path) -> set[str]:
    try:
        text = extensions_conf.read_text(errors="replace")
    except OSError:
        return set()
    return set(re.findall(r"^\[([^\]()]+)\]", text, flags=re.M)) - {"general", "globals"}


def probe_context(dialplan: str, conf: Path = REPO_CONF) -> str:
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
