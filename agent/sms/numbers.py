"""Phone numbers: classify a raw caller id into E.164 and a kind (mobile, landline, anonymous...)."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)
def classify(raw: str | None, region: str) -> NumberInfo:
    """Classify a caller id; national numbers are read as ``region``. Never raises: anything
    that is not a valid number comes back as kind anonymous, short_code or invalid."""
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
    try:
        parsed = phonenumbers.parse(compact, region)
    except NumberParseException:
        return NumberInfo(None, "invalid", None, "not a parseable number")
    if not phonenumbers.is_valid_number(parsed):
        return NumberInfo(None, "invalid", None, "not a valid number in its numbering plan")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    country = phonenumbers.region_code_for_number(parsed)
    # The templates' language and the policies ask this number's country next: parsed once.
    _remember_country(e164, country if country and is_region(country) else None)
    if country != region:
        return NumberInfo(e164, "international", country)
    if phonenumbers.number_type(parsed) in _MOBILE_TYPES:
        return NumberInfo(e164, "mobile", country)
    return NumberInfo(e164, "landline", country)


#: E.164 -> its country, newest last, for ``country_of``: kept by ``classify`` and by it.
_COUNTRIES: dict[str, str | None] = {}
_COUNTRIES_KEPT = 4096


def _remember_country(e164: str, country: str | None) -> None:
    _COUNTRIES[e164] = country
    if len(_COUNTRIES) > _COUNTRIES_KEPT:
        del _COUNTRIES[next(iter(_COUNTRIES))]


def country_of(e164: str | None) -> str | None:
    """The ISO 3166 region of an E.164 number (``+4470...`` -> ``GB``); None when it has none
    (satellite and other non-geographic ranges such as +88216) or does not parse."""
    if not e164:
        return None
    if e164 in _COUNTRIES:
        return _COUNTRIES[e164]
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except NumberParseException:
        return None
    country = region if region and is_region(region) else None
    _remember_country(e164, country)
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
