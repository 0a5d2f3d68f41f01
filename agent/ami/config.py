"""rules.yaml's ``pbxes:``: the AMI links one agent holds, one entry per PBX it watches.

``aftercall check`` validates the section against ``PbxLinkConfig`` (with file:line) and
``aftercall run`` opens one AMI client, call tracker and CDR recovery per entry from the very
same objects. Without the section the agent watches the one PBX its settings name (``--pbx``,
``--ami-*``, ``--cdr-csv``), as it always has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.settings import is_loopback

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
        # The same refusal as --ami-host without --ami-tls (agent.ami.client.AmiConfig.check),
        # said at load time with the entry's file:line.
        if not self.tls and not self.allow_plain_remote and not is_loopback(self.host):
            raise ValueError(
                f"plain-text AMI to {self.host} would carry the secret and every caller's "
                "number in clear: set tls: true (port 5039) or allow_plain_remote: true")
        return self
