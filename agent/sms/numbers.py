"""Phone numbers: classify a raw caller id into E.164 and a kind (mobile, landline, anonymous...)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

NumberKind = Literal["mobile", "landline", "anonymous", "international", "short_code", "invalid"]

#: Kinds an SMS can never be delivered to: the engine suppresses them as ``invalid_number``.
UNREACHABLE: frozenset[str] = frozenset({"anonymous", "short_code", "invalid"})

# What Asterisk and carriers put in CALLERID(num) when the caller withholds it; compared
# case-insensitively. "<unknown>" is what chan_pjsip reports for an empty From user.
_ANONYMOUS = frozenset(
    {"", "anonymous", "unknown", "<unknown>", "restricted", "private", "withheld", "unavailable"}
)
# Short codes are 3-6 digits everywhere we care about (India 5-6, US 5-6, UK 5).
_SHORT_CODE = re.compile(r"[0-9]{3,6}")
_PUNCTUATION = re.compile(r"[\s().\-/]")
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


@dataclass(frozen=True, slots=True)
class NumberInfo:
    e164: str | None  # "+919812345678"; None unless the number is valid
    kind: NumberKind
    country: str | None  # ISO 3166 region of the number, e.g. "IN"
    detail: str = ""  # why a number is anonymous/short_code/invalid, for logs and explain

    @property
    def reachable(self) -> bool:
        return self.kind not in UNREACHABLE


def is_region(region: str) -> bool:
    """True when phonenumbers knows ``region`` (ISO 3166 alpha-2, upper case)."""
    return region in phonenumbers.SUPPORTED_REGIONS


class _Memo:
    """A direct-mapped memo of short byte strings to short byte strings in one buffer made at
    start: ``slots`` rows of ``width`` bytes (key length, key, value length, value); a key
    that hashes to a taken row takes it over, as a CPU cache does. Why not a dict or an
    ``lru_cache``: with a fresh caller on every call, their entries (a key tuple, the raw
    text, a link, the answer and its strings: five small objects a number) were the agent's
    longest-lived per-call objects (at 50 calls/s a 4,096-entry cache keeps each ~80 s),
    allocated among each call's short-lived garbage in Python's object pools, where every
    one still alive keeps its pool, and the 1 MiB arena around it, from being handed back.
    Here what is remembered is bytes in the one buffer: no Python object per number, and
    the memory is the same from the first call to the millionth. A row is written and read
    in one slice (atomic under the GIL)."""

    __slots__ = ("_mask", "_rows", "_width")

    def __init__(self, slots: int, width: int) -> None:
        if slots & (slots - 1) or width > 256:
            raise ValueError("slots must be a power of two and width at most 256")
        self._rows = bytearray(slots * width)
        self._width = width
        self._mask = slots - 1

    def get(self, key: bytes) -> bytes | None:
        width, n = self._width, len(key)
        at = (hash(key) & self._mask) * width
        row = bytes(self._rows[at:at + width])
        if n == 0 or row[0] != n or row[1:n + 1] != key:
            return None
        return row[n + 2:n + 2 + row[n + 1]]

    def put(self, key: bytes, value: bytes) -> None:
        """Remembered unless the pair does not fit a row (then simply not remembered)."""
        width, n, m = self._width, len(key), len(value)
        if n == 0 or n + m + 2 > width:
            return
        at = (hash(key) & self._mask) * width
        self._rows[at:at + width] = b"%c%b%c%b" % (n, key, m, value) + bytes(width - n - m - 2)

    def clear(self) -> None:
        self._rows[:] = bytes(len(self._rows))


# Kinds and details a parse can end in (the cheap checks before it are not remembered).
_PARSED_KINDS: tuple[NumberKind, ...] = ("mobile", "landline", "international", "invalid")
_PARSE_DETAILS = ("", "not a parseable number", "not a valid number in its numbering plan")
#: (region, raw caller id) -> what parsing it said, for the repeated look-ups of one call (the
#: tracker, the rules, the policy and the pipeline each ask about the same caller) and for
#: callers who call again: 4,096 rows of 64 bytes (256 KiB), made once.
_PARSED = _Memo(4096, 64)
#: E.164 -> its country, for ``country_of``: filled by ``classify`` and by it (128 KiB).
_COUNTRIES = _Memo(4096, 32)


def forget() -> None:
    """Empties both memos (tests: to see a number worked out afresh)."""
    _PARSED.clear()
    _COUNTRIES.clear()


def classify(raw: str | None, region: str) -> NumberInfo:
    """Classify a caller id; national numbers are read as ``region``. Never raises: anything
    that is not a valid number comes back as kind anonymous, short_code or invalid."""
    key = f"{region}\0{raw}".encode() if raw and raw.isascii() and region.isascii() else b""
    got = _PARSED.get(key) if key else None
    if got is not None:
        kind, detail, country, e164 = got.decode().split("\0")
        return NumberInfo(e164 or None, _PARSED_KINDS[int(kind)], country or None,
                          _PARSE_DETAILS[int(detail)])
    text = (raw or "").strip()
    if text.casefold() in _ANONYMOUS:
        return NumberInfo(None, "anonymous", None, "caller id withheld")
    compact = _PUNCTUATION.sub("", text)
    if _SHORT_CODE.fullmatch(compact):
        return NumberInfo(None, "short_code", None, f"{len(compact)}-digit short code")
    if compact.startswith("00"):
        # International prefix as dialled in most of the world; phonenumbers only knows
        # the region's own IDD, and Asterisk often passes the digits through unchanged.
        compact = "+" + compact[2:]
    if not re.fullmatch(r"\+?[0-9]+", compact):
        return NumberInfo(None, "invalid", None, "not a phone number")
    info = _parse(compact, region)
    if key:
        _PARSED.put(key, "\0".join((str(_PARSED_KINDS.index(info.kind)),
                                      str(_PARSE_DETAILS.index(info.detail)),
                                      info.country or "", info.e164 or "")).encode())
    return info


def _parse(compact: str, region: str) -> NumberInfo:
    try:
        parsed = phonenumbers.parse(compact, region)
    except NumberParseException:
        return NumberInfo(None, "invalid", None, _PARSE_DETAILS[1])
    if not phonenumbers.is_valid_number(parsed):
        return NumberInfo(None, "invalid", None, _PARSE_DETAILS[2])
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    country = phonenumbers.region_code_for_number(parsed)
    # The templates' language and the policies ask this number's country next: parsed once.
    _COUNTRIES.put(e164.encode(), (country if country and is_region(country) else "").encode())
    if country != region:
        return NumberInfo(e164, "international", country)
    if phonenumbers.number_type(parsed) in _MOBILE_TYPES:
        return NumberInfo(e164, "mobile", country)
    return NumberInfo(e164, "landline", country)


def country_of(e164: str | None) -> str | None:
    """The ISO 3166 region of an E.164 number (``+4470...`` -> ``GB``); None when it has none
    (satellite and other non-geographic ranges such as +88216) or does not parse."""
    if not e164:
        return None
    key = e164.encode() if e164.isascii() else b""
    got = _COUNTRIES.get(key) if key else None
    if got is not None:
        return got.decode() or None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except NumberParseException:
        return None
    country = region if region and is_region(region) else None
    if key:
        _COUNTRIES.put(key, (country or "").encode())
    return country


def mask(number: str, keep: int = 4) -> str:
    """``+919812345678`` -> ``+91******5678``: the country code and the last digits stay."""
    if len(number) <= keep:
        return "*" * len(number)
    head = 3 if number.startswith("+") else 0
    if len(number) - head <= keep:
        head = 0
    middle = len(number) - head - keep
    return number[:head] + "*" * middle + number[-keep:]


# A phone number written inside a text: an optional +, then 8 or more digits that may be
# grouped by spaces, dashes or brackets ("+91 98123 45678", "(0)20-7946-0958"); not a date
# (2024-05-01) and not the middle of a longer token.
_IN_TEXT = re.compile(r"(?<![\w:.])(?!\d{4}-\d{2}-\d{2})\+?\d(?:[\s()-]{0,2}\d){7,}")


def mask_text(text: str, keep: int = 4) -> str:
    """Every phone-number-like run in ``text`` masked as ``mask`` does (grouping dropped):
    "call +91 98123 45678" -> "call +91******5678". Any run of 8 or more digits counts: a
    masked view may hide a long ticket number, but never shows a caller's number."""

    def one(m: re.Match[str]) -> str:
        raw = m.group(0)
        compact = ("+" if raw.startswith("+") else "") + re.sub(r"\D", "", raw)
        return mask(compact, keep)

    return _IN_TEXT.sub(one, text)
