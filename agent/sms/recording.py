"""Signed, expiring links to a call's recording: the URL a text's ``{{ recording_link }}`` points
to (behind a tracked short link) and the check the agent's web makes before serving it (pure).

The URL is ``{public_base}/rec/{call}/{expires}/{signature}/{file}``: ``call`` the call id,
``PBX:CALLID`` for a call of a named PBX (two PBXs can give calls one id; see ``call_ref``),
``file`` the recording's file name (MixMonitor's ``MIXMONITOR_FILENAME``, directory stripped),
``expires`` epoch seconds, and the signature an HMAC-SHA256 over the other three with the
operator's secret, so a changed call, PBX, file or expiry, or a made-up link, is refused.
Nothing here logs or shows the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from urllib.parse import quote

#: The channel variable MixMonitor sets to the file it records into.
RECORDING_VAR = "MIXMONITOR_FILENAME"
#: What a recording's file name may be (a path or anything odd is refused, never served).
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-+]{0,199}$")
_SIG = re.compile(r"^[A-Za-z0-9_\-]{43}$")
MIN_SECRET = 16


#: The PBX of a single-PBX agent (settings' ``pbx`` default): its links name the call alone.
DEFAULT_PBX = "default"


def call_ref(pbx: str, call_id: str) -> str:
    """A call as its recording link names it: ``PBX:CALLID``, or the call id alone for the
    default PBX (links of one PBX read as they always did)."""
    return call_id if pbx == DEFAULT_PBX else f"{pbx}:{call_id}"


def split_ref(ref: str) -> tuple[str, str]:
    """``call_ref``'s (PBX, call id); a PBX name has no ``:``, a call id may."""
    pbx, sep, call_id = ref.partition(":")
    return (pbx, call_id) if sep else (DEFAULT_PBX, ref)


class Verdict(Enum):
    OK = "ok"
    BAD = "bad"  # tampered with or made up: 403
    EXPIRED = "expired"  # 410


def file_name(path: str | None) -> str | None:
    """``/var/spool/asterisk/monitor/2024-call-1.wav`` -> ``2024-call-1.wav``; None if odd."""
    if not path:
        return None
    name = path.strip().rsplit("/", 1)[-1]
    return name if _FILE.match(name) and name not in (".", "..") else None


@dataclass(frozen=True, slots=True)
class RecordingSigner:
    """Signs and checks recording URLs with one secret (from rules.yaml's ``recordings``)."""

    secret: bytes = field(repr=False)
    public_base: str
    ttl: timedelta

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET:
            raise ValueError(f"the recordings secret must be at least {MIN_SECRET} bytes")

    def _sig(self, call_id: str, expires: int, name: str) -> str:
        msg = f"{call_id}\n{expires}\n{name}".encode()
        digest = hmac.new(self.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def url(self, call_id: str, path: str | None, now: datetime) -> str | None:
        """The signed URL of the call's recording, valid for ``ttl`` from ``now``; None when
        the call has no (usable) recording file."""
        name = file_name(path)
        if name is None or not call_id:
            return None
        expires = int((now + self.ttl).timestamp())
        sig = self._sig(call_id, expires, name)
        return (f"{self.public_base.rstrip('/')}/rec/{quote(call_id, safe='')}/{expires}/{sig}/"
                f"{name}")

    def check(self, call_id: str, expires: str, sig: str, name: str, now: datetime) -> Verdict:
        """The signature first (an expired but forged link learns nothing), then the time."""
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and _SIG.match(sig)
                and file_name(name) == name):
            return Verdict.BAD
        want = self._sig(call_id, int(expires), name)
        if not hmac.compare_digest(want.encode(), sig.encode()):
            return Verdict.BAD
        if int(expires) <= now.timestamp():
            return Verdict.EXPIRED
        return Verdict.OK
