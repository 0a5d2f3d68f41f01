"""The AMI links' settings: rules.yaml's ``pbxes:`` entries, and the ``AmiConfig`` a client runs on.

``aftercall check`` validates the section against ``PbxLinkConfig`` (with file:line) and
``aftercall run`` opens one AMI client, call tracker and CDR recovery per entry from the very
same objects (``config_from_link``). Without the section the agent watches the one PBX its
settings name (``--pbx``, ``--ami-*``, ``--cdr-csv``; ``config_from_settings``), as it always has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.errors import ConfigError
from agent.settings import Settings, is_loopback, read_secret_file

def in_clear(host: str, *, tls: bool, allowed: bool) -> bool:
    """AMI that would carry the secret and callers' numbers in clear across a network: plain
    text to a host that is not this one, without the operator's explicit consent. Refused
    the same way whether the link comes from rules.yaml (``PbxLinkConfig``) or from flags
    (``AmiConfig.check``)."""
    return not tls and not allowed and not is_loopback(host)


#: A PBX's name goes into idempotency keys, metric labels and URLs: keep it plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class PbxLinkConfig(BaseModel):
    """One PBX: where its AMI is, who aftercall logs in as, and where its CDR is.

    ``secret_file`` holds the AMI secret (never the secret itself in rules.yaml); a relative
    path is read from the directory aftercall runs in, as ``--ami-secret-file`` is.
    ``cdr_csv``: that PBX's Master.csv, for the calls that ended while its link was down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    user: Annotated[str, Field(min_length=1)] = "aftercall"
    secret_file: Path
    tls: bool = False
    allow_plain_remote: bool = False
    cdr_csv: Path | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(f"PBX name {v!r}: up to 63 letters, digits, '_', '.' or '-', "
                             "starting with a letter or digit (it is part of every idempotency "
                             "key, metric label and report filter)")
        return v

    @model_validator(mode="after")
    def _no_plain_remote(self) -> PbxLinkConfig:
        # The same refusal as --ami-host without --ami-tls (AmiConfig.check below),
        # said at load time with the entry's file:line.
        if in_clear(self.host, tls=self.tls, allowed=self.allow_plain_remote):
            raise ValueError(
                f"plain-text AMI to {self.host} would carry the secret and every caller's "
                "number in clear: set tls: true (port 5039) or allow_plain_remote: true")
        return self


@dataclass(frozen=True)
class AmiConfig:
    """What one AMI client connects with: address, login, timeouts, queue bound, backoff."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "aftercall"
    secret: str = field(default="", repr=False)
    tls: bool = False
    allow_plain_remote: bool = False
    connect_timeout: float = 5.0
    login_timeout: float = 5.0
    action_timeout: float = 5.0
    ping_interval: float = 2.0
    ping_timeout: float = 3.0
    queue_size: int = 100_000
    backoff_initial: float = 0.2
    backoff_max: float = 10.0

    def check(self) -> None:
        if not self.secret:
            raise ConfigError(
                "no AMI secret: set AFTERCALL_AMI_SECRET or AFTERCALL_AMI_SECRET_FILE"
            )
        if in_clear(self.host, tls=self.tls, allowed=self.allow_plain_remote):
            raise ConfigError(
                f"refusing plain-text AMI to {self.host}: the secret and every caller's number "
                "would cross the network in clear. Use AMI over TLS (--ami-tls, port 5039) or "
                "opt in with --ami-allow-plain-remote"
            )


def config_from_settings(settings: Settings) -> AmiConfig:
    return AmiConfig(host=settings.ami_host, port=settings.ami_port, username=settings.ami_user,
                     secret=settings.ami_secret, tls=settings.ami_tls,
                     allow_plain_remote=settings.ami_allow_plain_remote)


def config_from_link(link: PbxLinkConfig) -> AmiConfig:
    """One ``pbxes:`` entry's AMI settings, its secret read from its file (ConfigError if
    that file is unreadable or others may write it)."""
    return AmiConfig(host=link.host, port=link.port, username=link.user,
                     secret=read_secret_file(link.secret_file, "AMI secret file", strict=False),
                     tls=link.tls, allow_plain_remote=link.allow_plain_remote)
