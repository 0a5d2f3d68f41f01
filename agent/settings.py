"""Process settings (AMI address and credentials, database, HTTP bind) from flags and AFTERCALL_*."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent.errors import ConfigError

PREFIX = "AFTERCALL_"


def read_secret_file(path: Path, what: str, *, strict: bool) -> str:
    """A secret kept in a file, refused when someone else could have written it (owned by
    another user, or writable by group or others). ``strict`` (files aftercall made itself):
    also refused when group or others may read it. Mounted secrets (Docker's /run/secrets,
    often root's and world-readable inside the container) pass with a warning instead."""
    try:
        st = path.stat()
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror}") from e
    me = os.geteuid()
    if st.st_uid not in (me, 0) or (strict and st.st_uid != me):
        raise ConfigError(f"{what} {path} is owned by another user (uid {st.st_uid}): refused; "
                          f"chown it to the user aftercall runs as")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 or (strict and mode & 0o077):
        raise ConfigError(f"{what} {path} has mode {mode:04o}: refused; run chmod 600 {path}")
    if mode & 0o044:
        structlog.get_logger(__name__).warning("secret_file_readable", path=str(path),
                                               mode=f"{mode:04o}", hint=f"chmod 600 {path}")
    return text


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(PREFIX + name, default)


def add_common_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (flags override AFTERCALL_* environment variables)")
    g.add_argument("--ami-host", help="AMI host (AFTERCALL_AMI_HOST, default 127.0.0.1)")
    g.add_argument("--ami-port", type=int, help="AMI port (AFTERCALL_AMI_PORT, default 5038)")
    g.add_argument("--ami-user", help="AMI username (AFTERCALL_AMI_USER, default aftercall)")
    g.add_argument("--ami-secret-file",
                   help="file holding the AMI secret (AFTERCALL_AMI_SECRET_FILE); or set "
                        "AFTERCALL_AMI_SECRET. Never passed as a flag: argv is visible to all users")
    g.add_argument("--ami-tls", action="store_true", default=None,
                   help="AMI over TLS (AFTERCALL_AMI_TLS=1), required for a non-loopback host")
    g.add_argument("--ami-allow-plain-remote", action="store_true", default=None,
                   help="accept plain-text AMI to a non-loopback host (AFTERCALL_AMI_ALLOW_PLAIN=1)")
    g.add_argument("--rules", help="rules.yaml (AFTERCALL_RULES, default ./rules.yaml)")
    g.add_argument("--db", help="SQLite file, or postgresql://user@host/db shared by several "
                                "agents (AFTERCALL_DB, default ./aftercall.db)")
    g.add_argument("--agent-name", help="this agent among those sharing a PostgreSQL database "
                                        "(AFTERCALL_AGENT_NAME, default HOSTNAME:HTTP_PORT); "
                                        "keep it across restarts")
    g.add_argument("--http", help="HTTP bind host:port (AFTERCALL_HTTP, default 127.0.0.1:8080)")
    g.add_argument("--public-url", help="public base URL of the HTTP server (AFTERCALL_PUBLIC_URL)")
    g.add_argument("--agi-port", type=int, help="FastAGI port on 127.0.0.1 (AFTERCALL_AGI_PORT, 4573)")
    g.add_argument("--pbx", help="this PBX's name on every call record (AFTERCALL_PBX, "
                   "default 'default')")
    g.add_argument("--cdr-csv", help="Asterisk Master.csv for reconciliation (AFTERCALL_CDR_CSV)")


def _flag(args: argparse.Namespace, name: str) -> object:
    return getattr(args, name, None)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _db(value: str) -> Path | str:
    """A PostgreSQL URL stays a string (a Path would fold its ``//``); anything else is a file."""
    from agent.store import is_postgres_url

    return value if is_postgres_url(value) else Path(value)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "yes", "true", "on")


@dataclass(frozen=True)
class Settings:
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "aftercall"
    ami_secret: str = field(default="", repr=False)
    ami_tls: bool = False
    ami_allow_plain_remote: bool = False
    rules: Path = Path("rules.yaml")
    # A SQLite file, or a PostgreSQL URL (str); not in repr: a URL may carry a password.
    db: Path | str = field(default=Path("aftercall.db"), repr=False)
    agent_name: str = ""
    pbx: str = "default"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str | None = None
    cdr_csv: Path | None = None
    dashboard_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        secret = env("AMI_SECRET") or ""
        secret_file = _flag(args, "ami_secret_file") or env("AMI_SECRET_FILE")
        if secret_file:
            secret = read_secret_file(Path(str(secret_file)), "AMI secret file", strict=False)
        http = str(_flag(args, "http") or env("HTTP", "127.0.0.1:8080"))
        host, _, port = http.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()):
            raise ConfigError(f"--http / AFTERCALL_HTTP must be host:port, not {http!r}")
        cdr = _flag(args, "cdr_csv") or env("CDR_CSV")
        return cls(
            ami_host=str(_flag(args, "ami_host") or env("AMI_HOST", "127.0.0.1")),
            ami_port=int(_flag(args, "ami_port") or env("AMI_PORT", "5038") or 5038),
            ami_user=str(_flag(args, "ami_user") or env("AMI_USER", "aftercall")),
            ami_secret=secret,
            ami_tls=bool(_flag(args, "ami_tls")) or _truthy(env("AMI_TLS")),
            ami_allow_plain_remote=bool(_flag(args, "ami_allow_plain_remote"))
            or _truthy(env("AMI_ALLOW_PLAIN")),
            rules=Path(str(_flag(args, "rules") or env("RULES", "rules.yaml"))),
            db=_db(str(_flag(args, "db") or env("DB", "aftercall.db"))),
            pbx=str(_flag(args, "pbx") or env("PBX") or "default"),
            agent_name=str(_flag(args, "agent_name") or env("AGENT_NAME")
                           or f"{socket.gethostname()}:{port}"),
            http_host=host,
            http_port=int(port),
            public_url=_flag(args, "public_url") or env("PUBLIC_URL"),  # type: ignore[arg-type]
            cdr_csv=Path(str(cdr)) if cdr else None,
            dashboard_token=env("DASHBOARD_TOKEN"),
            webhook_secret=env("WEBHOOK_SECRET"),
            agi_port=int(_flag(args, "agi_port") or env("AGI_PORT", "4573") or 4573),
        )
