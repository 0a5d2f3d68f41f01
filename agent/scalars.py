"""Scalar types shared by every configuration model read from rules.yaml (durations, hex tags),
and peer addresses as they are compared with its allowed sources and hosts."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_address(text: str | None) -> IpAddress | None:
    """A connection's peer address as a socket gives it, comparable with configured ones: an
    IPv6 zone dropped, an IPv4-mapped address (a dual-stack listener's view) as the IPv4 one;
    None when it is not an address."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: Any) -> timedelta:
    """ "15m", "24h", "60s", "1h30m", "2d"; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        # pydantic reports ValueError as a validation error, a TypeError would escape
        raise ValueError("expected a duration such as 15m, 24h, 60s or 1h30m")  # noqa: TRY004
    text = value.strip()
    try:
        if text.isascii() and text.isdigit():
            return timedelta(seconds=int(text))
        m = _DURATION.fullmatch(text)
        if not text or m is None:
            raise ValueError(f"bad duration {value!r}: expected e.g. 15m, 24h, 60s or 1h30m")
        d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    except OverflowError:
        # timedelta stops at 999,999,999 days; pydantic turns only ValueError into a problem.
        raise ValueError(f"duration {value!r} is too long") from None


def _hex_int(value: Any) -> Any:
    return int(value, 0) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
NonEmpty = Annotated[str, Field(min_length=1)]
HexInt = Annotated[int, BeforeValidator(_hex_int), Field(ge=0, le=0xFFFF)]
#: India DLT's principal entity - telemarketer chain (TRAI, enforced since December 2024): the
#: PE id and each telemarketer's id in order, comma-separated ("1101...,1302..."), or the
#: SHA-256 hash of that chain in hex where the delivering telemarketer asks for the hash. It is
#: the path texts take, so it is configured on the gateway they go through.
DltChain = Annotated[str, Field(pattern=r"^(\d{10,25}(,\d{10,25})+|[0-9A-Fa-f]{64})$")]
