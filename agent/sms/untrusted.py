"""Caller-controlled merge values as untrusted data: cleaned, bounded and refused before a template
sees them, so a caller can't write the company's SMS.

A caller chooses their CallerID name (and, on many trunks, the raw caller number, and whatever
they key into an IVR that the dialplan stores). Put in a text sent from the company's sender ID
- to a number the caller may have spoofed - it is a phishing kit: "Visit http://evil.example
now". So by default these values lose control, format and bidi characters, are cut to a
budget that `check`'s worst case uses, and are refused outright (treated as missing, so
``default()`` applies) when they carry a URL, a domain, an e-mail address or, in a name, a
phone number. ``| trusted`` in a template opts one use out. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Merge tags that always come from the caller.
CALLER_FIELDS: frozenset[str] = frozenset({"caller_name", "caller"})
DEFAULT_MAX_LENGTH = 20

# Cc (C0/C1 controls: BEL, ESC), Cf (format: RLO/LRO/PDF, isolates, zero-width joiners), Co
# (private use), Cs (lone surrogates), Cn (unassigned), Zl/Zp (line and paragraph separators).
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
_SPACES = re.compile(r"\s+")
# Terminal escape sequences (CSI "ESC [ 2 J", OSC "ESC ] ... BEL"): removed whole, not just
# their ESC, so no "[2J" is left in a name.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_URL = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.\-]*://|\b(?:https?|mailto|tel|sms|javascript|data):\S|\bwww\d?\.)"
)
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
# A dotted name whose last label is a two-letter country domain or a common generic one
# ("evil.example" is caught as .example is reserved for exactly this). "Dr.Li" is refused too:
# the price of not letting "bit.ly" through.
_GTLDS = (
    "com|net|org|info|biz|io|app|xyz|top|online|site|club|shop|link|click|live|pro|mobi|"
    "name|store|tech|website|space|fun|icu|vip|work|help|support|example|invalid|test|"
    "local|page|dev|cloud|money|bank|pay|win|bet|loan|gov|edu"
)
_DOMAIN = re.compile(rf"(?i)(?<![\w@])(?:[^\W_][\w-]*\s?\.\s?)+(?:[a-z]{{2}}|{_GTLDS})\b")
# A phone number in a name is a call-back scam ("Call 07012345678 now").
_PHONE = re.compile(r"\d(?:[\s().\-]*\d){6,}")


@dataclass(frozen=True, slots=True)
class UntrustedPolicy:
    """rules.yaml's ``defaults.untrusted``: the budget and which channel variables a caller
    controls (e.g. digits keyed into an IVR and stored with Set())."""

    max_length: int = DEFAULT_MAX_LENGTH
    vars: frozenset[str] = frozenset()


DEFAULT_POLICY = UntrustedPolicy()


@dataclass(frozen=True, slots=True)
class Cleaned:
    value: str | None  # None: refused or empty (the merge tag is missing)
    trusted: str  # the value with only invisible characters removed (for ``| trusted``)
    refused: str | None = None  # why, when refused


def strip_invisible(text: str) -> str:
    """Remove control, format and bidi characters; any run of whitespace becomes one space."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in _ANSI.sub("", text)
        if ch.isspace() or unicodedata.category(ch) not in _DROP_CATEGORIES
    )
    return _SPACES.sub(" ", kept).strip()


def clean(text: str, *, max_length: int, name: bool = False) -> Cleaned:
    """``text`` as a template may see it. ``name``: also refuse phone numbers (a caller's
    name holds none; a caller number or an IVR value does)."""
    visible = strip_invisible(text)
    why = None
    if _URL.search(visible) or _EMAIL.search(visible):
        why = "contains a URL or e-mail address"
    elif _DOMAIN.search(visible):
        why = "contains a domain name"
    elif name and _PHONE.search(visible):
        why = "contains a phone number"
    if why is not None:
        return Cleaned(None, visible, why)
    cut = visible[:max_length].rstrip()
    return Cleaned(cut or None, visible)


def gsm_only(text: str) -> str | None:
    """The GSM-7 characters of ``text`` (a name that would turn the whole SMS into UCS-2 and
    multiply its segments); None when nothing is left."""
    from agent.sms.encoding import is_gsm7

    kept = _SPACES.sub(" ", "".join(ch for ch in text if is_gsm7(ch))).strip()
    return kept or None
