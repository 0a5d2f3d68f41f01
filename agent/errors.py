"""The one exception tree of aftercall.

    AftercallError
    +-- ConfigError            settings or rules.yaml are wrong; the user must fix a file/flag
    |   +-- RulesError         carries every Problem found (file:line:column, key path, message)
    +-- AmiError               the AMI link
    |   +-- AmiLoginError      Asterisk refused our credentials: retrying will not help
    |   +-- AmiDisconnected    no connection right now; actions fail fast
    |   +-- AmiTimeout         an action got no response in time
    +-- ProtocolError          a peer broke its protocol (malformed AMI block, SMPP PDU);
    |   +-- PduError           names the PDU field that is wrong
    +-- GatewayError           an SMS gateway refused or failed a submit
    |   +-- GatewayTemporaryError   worth retrying (throttled, queue full, 5xx, connection lost)
    |   +-- GatewayPermanentError   never retry (invalid destination, rejected, 4xx)
    |   +-- GatewayAmbiguousError   the submit may or may not have reached the SMSC
    +-- StoreError             the database cannot record (locked, disk full, newer schema)
    +-- CallLookupError        a call named by id is not stored, or that id is on several PBXs
    +-- LabError               the local Asterisk lab cannot be provisioned or started

Messages never contain secrets: anything that formats a settings object uses its redacted form.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass


class AftercallError(Exception):
    """Base of every error aftercall raises on purpose."""


class ConfigError(AftercallError):
    pass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a configuration file, located precisely."""

    file: str
    line: int | None
    column: int | None
    path: str  # dotted key path, e.g. "rules[2].match.queue"
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class RulesError(ConfigError):
    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class AmiError(AftercallError):
    pass


class AmiLoginError(AmiError):
    pass


class AmiDisconnected(AmiError):
    pass


class AmiTimeout(AmiError):
    pass


class ProtocolError(AftercallError):
    pass


class PduError(ProtocolError):
    def __init__(self, message: str, *, field: str | None = None, command: str | None = None):
        self.field = field
        self.command = command
        where = " ".join(x for x in (command, field) if x)
        super().__init__(f"{where}: {message}" if where else message)


class GatewayError(AftercallError):
    """A gateway failed a submit. ``code`` is the gateway's own status (SMPP command_status,
    HTTP status), ``reason`` a short stable word for reports (e.g. ``throttled``)."""

    def __init__(self, message: str, *, code: int | str | None = None, reason: str = "error"):
        self.code = code
        self.reason = reason
        super().__init__(message)


class GatewayTemporaryError(GatewayError):
    """Try again later; ``retry_after`` is how long the gateway asked us to wait (seconds)."""

    def __init__(self, message: str, *, code: int | str | None = None, reason: str = "error",
                 retry_after: float | None = None):
        super().__init__(message, code=code, reason=reason)
        self.retry_after = retry_after


class GatewayPermanentError(GatewayError):
    pass


class GatewayAmbiguousError(GatewayError):
    pass


class StoreError(AftercallError):
    pass


class CallLookupError(AftercallError):
    """A call a person named (``explain CALLID``, ``/api/calls/ID``) is not stored, or its id
    is on more than one PBX (``pbxes``: those PBXs; name one as ``PBX:CALLID`` or ``--pbx``)."""

    def __init__(self, message: str, pbxes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.pbxes = pbxes


class LabError(AftercallError):
    pass


def star_out(form: str, message: str) -> str:
    """``message`` with a secret ``form`` starred out. A value of 4 characters or more goes
    wherever it appears, in any case. A shorter one (a 1-letter password) goes only where it
    stands as a token of its own: anywhere else it would star out that letter in every word of
    the message, and a letter inside a word says nothing about the secret."""
    if len(form) >= 4:
        return re.sub(re.escape(form), "***", message, flags=re.IGNORECASE)
    return re.sub(rf"(?<![0-9A-Za-z]){re.escape(form)}(?![0-9A-Za-z])", "***", message)


def redacted(exc: Exception) -> str:
    """A pydantic ValidationError as ``loc: message`` lines without the input values (a URL,
    a password or a token the caller passed), which ``str(exc)`` would print."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    lines = []
    for err in errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        lines.append(f"{loc}: {str(err.get('msg', '')).removeprefix('Value error, ')}")
    return "; ".join(lines)


async def outcome(work: Awaitable[object]) -> AftercallError | None:
    """Await ``work``; its AftercallError comes back as a value (None when it returned), so a
    TaskGroup's body can stop in order and raise it once everything is closed (raised inside
    the group it would come out wrapped in an ExceptionGroup, after an aborted cleanup)."""
    try:
        await work
    except AftercallError as e:
        return e
    return None

