"""What every preset's webhook code shares: the request as the web layer hands it over, the
answers, the errors, field readers, and the URL token Kannel and Jasmin callbacks carry (pure)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.errors import AftercallError, ProtocolError
from agent.gateways.presets.common import HttpGatewayConfig, callback_token
from agent.scalars import peer_address


class WebhookAuthError(AftercallError):
    """A webhook that cannot be shown to come from the gateway: answer 403, process nothing."""


class WebhookReplayError(WebhookAuthError):
    """An authentic webhook seen before: acknowledge it, do not process it again."""


class WebhookPayloadError(ProtocolError):
    """An authentic webhook whose fields are missing or malformed (names the field)."""


class Kind(enum.StrEnum):
    RECEIPT = "receipt"
    INBOUND = "inbound"


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    method: str
    url: str  # full URL as the gateway requested it, query included
    headers: Mapping[str, str]
    query: Mapping[str, str]
    form: Mapping[str, str] | None = None
    body: bytes = b""
    remote: str | None = None  # the TCP peer's address


@dataclass(frozen=True, slots=True)
class Ack:
    status: int
    body: str
    content_type: str


def header(req: WebhookRequest, name: str) -> str | None:
    lname = name.lower()
    for k, v in req.headers.items():
        if k.lower() == lname:
            return v
    return None


def pairs(m: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if not m:
        return []
    getall = getattr(m, "getall", None)
    if getall is not None:
        return [(k, str(v)) for k in dict.fromkeys(m) for v in getall(k)]
    return [(k, str(v)) for k, v in m.items()]


def params(req: WebhookRequest) -> dict[str, str]:
    """Query and form merged; the form wins (Jasmin POSTs its fields to a URL with our query)."""
    return {**dict(pairs(req.query)), **dict(pairs(req.form))}


def field(p: Mapping[str, str], name: str, where: str) -> str:
    v = p.get(name)
    if v is None or v == "":
        raise WebhookPayloadError(f"{where}: missing field {name!r}")
    return v


def opt(p: Mapping[str, str], name: str) -> str | None:
    v = p.get(name)
    # Kannel leaves an escape it does not know (old versions and %F) in the URL as is.
    return None if v is None or v == "" or (len(v) == 2 and v.startswith("%")) else v


def number(value: str | None, max_digits: int = 20) -> int | None:
    """A decimal field as an int, None unless it is a few plain ASCII digits: str.isdigit()
    also accepts superscripts, which int() refuses, and int() refuses over 4300 digits."""
    if not value or len(value) > max_digits or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def unix_time(value: str | None) -> datetime | None:
    """Kannel's %T; None when absent or outside what datetime can hold."""
    seconds = number(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def json_body(req: WebhookRequest, where: str) -> Any:
    try:
        return json.loads(req.body)
    except json.JSONDecodeError as exc:
        raise WebhookPayloadError(f"{where}: body is not JSON ({exc.msg} at {exc.pos})") from None
    except UnicodeDecodeError:
        raise WebhookPayloadError(f"{where}: body is not UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:
        # Valid JSON Python will not read: an integer over 4300 digits, arrays nested past
        # the recursion limit. A sender's mistake like any other, not a 500.
        what = "nested too deeply" if isinstance(exc, RecursionError) else "a number too long"
        raise WebhookPayloadError(f"{where}: body is not JSON we can read ({what})") from None


def digest(req: WebhookRequest) -> str:
    h = hashlib.sha256()
    for part in (req.method.upper(), req.url, *(f"{k}={v}" for k, v in sorted(pairs(req.form)))):
        h.update(part.encode() + b"\x00")
    h.update(req.body)
    return h.hexdigest()


def params_raw(p: Mapping[str, str]) -> str:
    """A form/query receipt as stored: its fields as JSON, without the URL token."""
    return json.dumps({k: v for k, v in p.items() if k != "t"}, sort_keys=True, ensure_ascii=False)


def source_allowed(config: HttpGatewayConfig, remote: str | None) -> bool:
    """Whether the peer is one of the gateway's ``allowed_sources``."""
    addr = peer_address(remote)
    if addr is None:
        return False
    return any(addr in ipaddress.ip_network(n, strict=False) for n in config.allowed_sources)


def verify_url_token(config: HttpGatewayConfig, kind: Kind, req: WebhookRequest, where: str,
                     secret: bytes) -> None:
    """Kannel and Jasmin cannot sign: the agent put a token in the URLs it gave them (receipts
    ``?mid=..&t=HMAC(secret, "receipt", gateway, mid)``, replies ``?t=HMAC(.., "inbound", ..)``).
    The receipt token covers ``mid``: a form field can't name another message."""
    q = dict(pairs(req.query))
    token = q.get("t")
    if not token:
        raise WebhookAuthError(f"{where}: missing token parameter 't'")
    mid = q.get("mid", "") if kind is Kind.RECEIPT else ""
    if kind is Kind.RECEIPT and not mid:
        raise WebhookAuthError(f"{where}: missing message id parameter 'mid'")
    expected = callback_token(secret, kind.value, config.name, mid)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise WebhookAuthError(f"{where}: bad token")
    form = dict(pairs(req.form))
    for key in ("mid", "t"):
        if key in form and form[key] != q.get(key):
            raise WebhookAuthError(
                f"{where}: form field {key!r} disagrees with the token-checked URL")
