"""SMS text encoding: GSM 03.38 (7-bit default alphabet) and UCS-2, unit and segment counting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# 3GPP TS 23.038 section 6.2.1: the default alphabet. Index = septet value. 0x1B is the escape
# to the extension table, not a character, so it has no entry in the encode map.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASIC) == 128

ESCAPE = 0x1B

# 3GPP TS 23.038 section 6.2.1.1: the default alphabet extension table (no national shifts).
_EXTENSION: dict[int, str] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE_BASIC: dict[str, int] = {ch: i for i, ch in enumerate(_BASIC) if i != ESCAPE}
_ENCODE_EXT: dict[str, int] = {ch: code for code, ch in _EXTENSION.items()}

_EXT_CHARS = frozenset(_ENCODE_EXT) - frozenset(_ENCODE_BASIC)
_GSM_CHARS = frozenset(_ENCODE_BASIC) | _EXT_CHARS

GSM7_SINGLE = 160
GSM7_MULTI = 153  # 160 septets minus the 7 a 6-octet concatenation UDH occupies
UCS2_SINGLE = 70
UCS2_MULTI = 67  # 140 octets minus the 6-octet UDH, in 2-octet units


@dataclass(frozen=True, slots=True)
class SmsInfo:
    encoding: Encoding
    units: int  # septets for GSM-7 (extension chars count 2), UTF-16 code units for UCS-2
    segments: int
    forcing_chars: tuple[str, ...]  # characters that forced UCS-2, in order of first appearance


def _gsm_cost(ch: str) -> int:
    """Septets one character needs in GSM-7, 0 when it is not representable."""
    if ch in _ENCODE_BASIC:
        return 1
    if ch in _ENCODE_EXT:
        return 2
    return 0


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def is_gsm7(text: str) -> bool:
    return all(ch in _ENCODE_BASIC or ch in _ENCODE_EXT for ch in text)


def _choose(text: str) -> tuple[Encoding, tuple[str, ...]]:
    forcing: dict[str, None] = {}
    for ch in text:
        if ch not in _ENCODE_BASIC and ch not in _ENCODE_EXT:
            forcing.setdefault(ch, None)
    if forcing:
        return "UCS-2", tuple(forcing)
    return "GSM-7", ()


def _split(text: str, encoding: Encoding) -> list[str]:
    """Greedy split in which a character never straddles two segments.

    A GSM escape pair and a UTF-16 surrogate pair are one Python character each, so moving the
    whole character to the next segment is exactly the rule handsets and SMSCs apply.
    """
    cost = _gsm_cost if encoding == "GSM-7" else _ucs2_cost
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_MULTI)
    if _units(text, encoding) <= single:
        return [text]
    parts: list[str] = []
    start = 0
    used = 0
    for i, ch in enumerate(text):
        c = cost(ch)
        if used + c > multi:
            parts.append(text[start:i])
            start, used = i, 0
        used += c
    parts.append(text[start:])
    return parts


def _units(text: str, encoding: Encoding) -> int:
    """``sum(cost(ch) for ch in text)``, counted over the text's distinct characters: every
    submit_sm is split (or found whole) on the way from the hangup to the SMSC."""
    chars = set(text)
    if encoding == "UCS-2":
        return len(text) + sum(text.count(ch) for ch in chars if ord(ch) > 0xFFFF)
    if chars <= _GSM_CHARS:
        return len(text) + sum(text.count(ch) for ch in chars & _EXT_CHARS)
    return sum(_gsm_cost(ch) * text.count(ch) for ch in chars)  # what cannot go costs 0


def analyze(text: str) -> SmsInfo:
    # Every rendered text is analysed on the way from hangup to submit: count over the set of
    # distinct characters (a few dozen) rather than cost each of the text's characters.
    chars = set(text)
    if chars <= _GSM_CHARS:
        encoding, forcing = "GSM-7", ()
        units = len(text) + sum(text.count(ch) for ch in chars & _EXT_CHARS)
        single, multi, cost = GSM7_SINGLE, GSM7_MULTI, _gsm_cost
    else:
        encoding, forcing = _choose(text)
        units = len(text) + sum(text.count(ch) for ch in chars if ord(ch) > 0xFFFF)
        single, multi, cost = UCS2_SINGLE, UCS2_MULTI, _ucs2_cost
    if units <= single:
        segments = 1
    else:
        # Counting without building the strings; same greedy rule as _split.
        segments, used = 1, 0
        for ch in text:
            c = cost(ch)
            if used + c > multi:
                segments, used = segments + 1, 0
            used += c
    return SmsInfo(encoding=encoding, units=units, segments=segments, forcing_chars=forcing)


def split_segments(text: str, encoding: Encoding | None = None) -> list[str]:
    """The text of each segment as it will be sent (a single-element list for a single SMS).
    ``encoding``: the one already worked out for this text (it is not worked out again)."""
    if encoding is None:
        encoding, _ = _choose(text)
    return _split(text, encoding)


def encode_gsm7(text: str) -> bytes:
    """Unpacked septets, one per octet (SMPP data_coding 0). Raises ValueError naming the
    position of the first character the default alphabet cannot represent."""
    if not _GSM_CHARS.issuperset(text):
        i, ch = next((i, ch) for i, ch in enumerate(text) if ch not in _GSM_CHARS)
        raise ValueError(f"character {ch!r} at position {i} is not in the GSM 03.38 alphabet")
    # One C-level pass (every submit_sm of a GSM-7 text is encoded on the way to the SMSC).
    return text.translate(_SEPTETS).encode("latin-1")


#: Character -> its septets as code points 0-127 (an extension character: ESC, then its code).
_SEPTETS: dict[int, str] = {
    **{ord(ch): chr(ESCAPE) + chr(code) for ch, code in _ENCODE_EXT.items()},
    **{ord(ch): chr(code) for ch, code in _ENCODE_BASIC.items()},
}


#: Septet (as a code point 0-127) -> its default-alphabet character.
_BASIC_CHARS: dict[int, str] = dict(enumerate(_BASIC))


def decode_gsm7(data: bytes) -> str:
    """Decode unpacked septets. An escape followed by a code missing from the extension table
    shows the default-alphabet character (TS 23.038 6.2.1.1); a trailing lone escape is
    dropped. Octets above 0x7F raise ValueError naming their offset."""
    if ESCAPE not in data and data.isascii():  # no extension character: one C-level pass
        return data.decode("ascii").translate(_BASIC_CHARS)
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b > 0x7F:
            raise ValueError(f"octet 0x{b:02X} at offset {i} is not a GSM 7-bit septet")
        if b == ESCAPE:
            if i + 1 >= n:
                break
            nb = data[i + 1]
            if nb > 0x7F:
                raise ValueError(f"octet 0x{nb:02X} at offset {i + 1} is not a GSM 7-bit septet")
            ext = _EXTENSION.get(nb)
            if ext is not None:
                out.append(ext)
            elif nb != ESCAPE:
                out.append(_BASIC[nb])
            else:
                out.append(" ")  # ESC ESC is reserved for a future table; a space is the rule
            i += 2
            continue
        out.append(_BASIC[b])
        i += 1
    return "".join(out)


def encode_ucs2(text: str) -> bytes:
    """UTF-16BE: what SMSCs accept as data_coding 8, astral characters as surrogate pairs."""
    return text.encode("utf-16-be", errors="surrogatepass")


def decode_ucs2(data: bytes) -> str:
    """UTF-16BE with lone surrogates replaced, and a dangling odd octet dropped: a handset-side
    fault must not make a receipt or reply unreadable."""
    if len(data) % 2:
        data = data[:-1]
    return data.decode("utf-16-be", errors="replace")
