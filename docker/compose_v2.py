#!/usr/bin/env python3
"""Debian's Compose v2, fetched once as Docker CLI plugins, to run docker/compose.yaml with it.

Debian bookworm packages Compose v1 only (`docker-compose` 1.29); Compose v2 is Debian's
`docker-compose` 2.x and `docker-buildx` from sid (no `docker-compose-plugin` or
`docker-compose-v2` package exists in Debian). Both are Go programs that need nothing newer than
bookworm's glibc, so their binaries are taken out of sid's packages (apt-get download with a
private sources list: the machine's own apt configuration is not touched) and kept as CLI
plugins in ``CACHE/compose-v2/cli-plugins``. Point DOCKER_CONFIG at ``CACHE/compose-v2`` and
`docker compose` finds them, or run ``CACHE/compose-v2/cli-plugins/docker-compose`` directly.
Standard library only, as root.

    python3 docker/compose_v2.py      # fetches once; prints the docker-compose v2 path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("AFTERCALL_LAB_DIR", "/var/cache/aftercall"))
#: A DOCKER_CONFIG directory holding only the plugins (no credentials, no settings).
CONFIG_DIR = CACHE / "compose-v2"
PLUGINS = CONFIG_DIR / "cli-plugins"
MIRROR = os.environ.get("AFTERCALL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: package -> the plugin binary it ships
PACKAGES = {"docker-compose": "docker-compose", "docker-buildx": "docker-buildx"}


class ComposeV2Error(RuntimeError):
    """Compose v2 could not be fetched; the message says what failed."""


def compose_v2() -> Path:
    """The docker-compose v2 binary (with docker-buildx beside it), fetched once."""
    binary = PLUGINS / "docker-compose"
    if all((PLUGINS / name).is_file() for name in PACKAGES.values()) and _runs(binary):
        return binary
    with tempfile.TemporaryDirectory(prefix="aftercall-compose-v2-") as tmp:
        work = Path(tmp)
        # _apt downloads into it.
        work.chmod(0o755)
        (work / "lists/partial").mkdir(parents=True)
        (work / "cache/archives/partial").mkdir(parents=True)
        sources = work / "sources.list"
        sources.write_text(f"deb {MIRROR} sid main\n")
        opts = ["-o", f"Dir::Etc::sourcelist={sources}", "-o", "Dir::Etc::sourceparts=/dev/null",
                "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
                # a snapshot mirror's sid Release file may have expired (see engine.py)
                "-o", "Acquire::Check-Valid-Until=false", "-q"]
        _run(["apt-get", *opts, "update"], "apt-get update (sid, private lists)")
        _run(["apt-get", *opts, "download", *PACKAGES], "apt-get download", cwd=work)
        PLUGINS.mkdir(parents=True, exist_ok=True)
        for package, name in PACKAGES.items():
            debs = sorted(work.glob(f"{package}_*.deb"))
            if not debs:
                raise ComposeV2Error(f"apt-get download left no {package} package")
            root = work / package
            _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], f"dpkg-deb -x {debs[-1].name}")
            found = list(root.glob(f"usr/libexec/docker/cli-plugins/{name}"))
            if not found:
                raise ComposeV2Error(f"{debs[-1].name} has no cli-plugins/{name}")
            tmp_copy = PLUGINS / f".{name}.tmp"
            shutil.copyfile(found[0], tmp_copy)
            tmp_copy.chmod(0o755)
            tmp_copy.replace(PLUGINS / name)
    if not _runs(binary):
        raise ComposeV2Error(f"{binary} does not run on this machine")
    return binary


def version(binary: Path) -> str:
    r = subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True,
                       check=False, timeout=30)
    return r.stdout.strip()


def _runs(binary: Path) -> bool:
    try:
        return bool(binary.is_file() and version(binary))
    except OSError:
        return False


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    if r.returncode != 0:
        raise ComposeV2Error(f"{what} failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}")


def main() -> int:
    try:
        binary = compose_v2()
    except ComposeV2Error as exc:
        print(f"compose-v2: {exc}", file=sys.stderr)
        return 1
    print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
