"""A message's state history packed into one blob (SQLite schema 23): its events, appended.

Each event is independent of the others, so a new one is appended (``log || event``) without
reading what is stored. An event is:

- one byte: the state's code (``packing.STATE_CODES``) in the low four bits (15: the code
  follows as a varint), the event's form in the high four;
- its time: signed (zigzag) varint of microseconds after the message's ``created_at`` (the
  first event's time, as a rule: it takes one byte);
- what its form says of its reason and detail. The usual ones are templates whose varying parts
  alone are stored (a receipt's reason and detail, ``receipt`` and ``smsc receipt delivered for
  S356a4156977a41b``, take 11 bytes instead of 50); anything else is stored as it is.

Encoding a template checks that it renders back to the very text, so every event reads back
exactly. What this writes is stored and migration 23 writes it: never change an existing form
or word; a new one takes a new number, and readers keep reading the old ones. Pure: no sqlite.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from agent.store.packing import STATE_CODES
from agent.store.packing import put_varint as _varint

#: Reasons and words that are stored as their index (append only: stored events hold them).
WORDS: tuple[str, ...] = (
    "receipt", "submitting", "submit_failed", "interrupted", "expiry", "expired",
    "delivered", "undelivered", "rejected", "accepted", "unknown", "failed",
    "opt_out", "dnd", "cooldown", "invalid_number", "quiet_hours", "rate_limited",
    "country_not_allowed", "max_age", "dry_run", "template_error", "too_long", "spend_cap",
    "scheduled", "scheduled_unless_called_again", "called_again", "retries_exhausted",
    "not_bound", "connect_failed", "connection_failed", "connection_lost", "bind_refused",
    "throttled", "response_timeout", "no_response", "bad_response", "unexpected_response",
    "invalid_message", "policy_error", "operator_resend", "operator_dropped", "partial",
    "not_started", "closed", "bad_signature",
    # gateway names: the shipped rules.yaml's, the usual backup's, and the presets'
    "smsc", "backup", "kannel", "jasmin", "twilio",
)
_WORD = {w: i for i, w in enumerate(WORDS)}

# Forms (the event byte's high four bits).
(_PLAIN, _REASON, _DETAIL, _BOTH, _RECEIPT, _CLAIM, _ACCEPTED, _PARTS,
 _RECEIPT_OF_STATE) = range(9)
#: A state's name by its code (``_RECEIPT_OF_STATE``: the receipt's word is the event's state).
_STATE_NAMES = {c: s for s, c in STATE_CODES.items()}

_RECEIPT_RE = re.compile(r"(.*) receipt (\S+) for (.*)", re.S)
_CLAIM_RE = re.compile(r"attempt ([1-9][0-9]{0,17}) via (.*)", re.S)
_ACCEPTED_RE = re.compile(r"(.*) accepted, smsc ids (.*)", re.S)
_PARTS_RE = re.compile(r"(.*) receipts: ([0-9]{1,18}) of ([0-9]{1,18}) parts delivered", re.S)

_LOWER = frozenset("0123456789abcdef")
_UPPER = frozenset("0123456789ABCDEF")

Event = tuple[int, int, str | None, str | None]  # (at µs, state code, reason, detail)


# ---- varints -------------------------------------------------------------------------------

def _zigzag(n: int, out: bytearray) -> None:
    _varint(n * 2 if n >= 0 else -n * 2 - 1, out)


class _Reader:
    """Reads a log front to back. Varints of one byte (most) are read inline by callers."""

    __slots__ = ("b", "i")

    def __init__(self, b: bytes) -> None:
        self.b, self.i = b, 0

    def varint(self) -> int:
        b, i = self.b, self.i
        byte = b[i]
        if byte < 0x80:
            self.i = i + 1
            return byte
        n, shift = byte & 0x7F, 7
        while True:
            i += 1
            byte = b[i]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.i = i + 1
                return n
            shift += 7

    def take(self, n: int) -> bytes:
        i = self.i
        part = self.b[i:i + n]
        if len(part) != n:
            raise ValueError("packed history ends inside a value")
        self.i = i + n
        return part

    def text(self) -> str:
        return self.take(self.varint()).decode()

    def word(self) -> str:
        n = self.varint()
        return WORDS[n >> 1] if not n & 1 else self.take(n >> 1).decode()

    def ident(self) -> str:
        h = self.varint()
        if not h & 1:
            return self.take(h >> 1).decode()
        digits = h >> 3
        prefix = chr(self.take(1)[0]) if h & 2 else ""
        packed = self.take((digits + 1) // 2).hex()[:digits]
        return prefix + (packed.upper() if h & 4 else packed)

    def ids(self) -> str:
        return ",".join(self.ident() for _ in range(self.varint()))


# ---- values --------------------------------------------------------------------------------

def _text(s: str, out: bytearray) -> None:
    b = s.encode()
    _varint(len(b), out)
    out += b


def _word(s: str, out: bytearray) -> None:
    i = _WORD.get(s)
    if i is not None:
        _varint(i << 1, out)
    else:
        b = s.encode()
        _varint(len(b) << 1 | 1, out)
        out += b


def _hex_tail(s: str, alphabet: frozenset[str]) -> int:
    n = 0
    for c in reversed(s):
        if c not in alphabet:
            break
        n += 1
    return n


def _ident(s: str, out: bytearray) -> None:
    """An SMSC's message id: one optional ASCII character and hex (or decimal) digits, packed
    two to a byte; anything else as text."""
    lower, upper = _hex_tail(s, _LOWER), _hex_tail(s, _UPPER)
    digits, case = (lower, 0) if lower >= upper else (upper, 4)
    prefix = s[:len(s) - digits]
    if digits >= 2 and len(prefix) <= 1 and prefix.isascii():
        _varint(digits << 3 | case | (2 if prefix else 0) | 1, out)
        out += prefix.encode()
        tail = s[len(prefix):]
        out += bytes.fromhex(tail + "0" * (digits & 1))
    else:
        b = s.encode()
        _varint(len(b) << 1, out)
        out += b


def _ids(s: str, out: bytearray) -> None:
    parts = s.split(",")
    _varint(len(parts), out)
    for p in parts:
        _ident(p, out)


# ---- events --------------------------------------------------------------------------------

def _template(state: int, reason: str | None, detail: str, out: bytearray) -> int | None:
    """The template form ``detail`` (with ``reason``) renders from, its parts in ``out``;
    None when it is none of them (``out`` untouched)."""
    part = bytearray()
    if reason == "receipt":
        if (m := _RECEIPT_RE.fullmatch(detail)) is not None:
            gw, word, ident = m.groups()
            if f"{gw} receipt {word} for {ident}" == detail:
                _word(gw, part)
                same = word == _STATE_NAMES.get(state)
                if not same:
                    _word(word, part)
                _ident(ident, part)
                out += part
                return _RECEIPT_OF_STATE if same else _RECEIPT
        if (m := _PARTS_RE.fullmatch(detail)) is not None:
            gw, done, total = m.groups()
            if f"{gw} receipts: {int(done)} of {int(total)} parts delivered" == detail:
                _word(gw, part)
                _varint(int(done), part)
                _varint(int(total), part)
                out += part
                return _PARTS
    elif reason == "submitting":
        if (m := _CLAIM_RE.fullmatch(detail)) is not None:
            _varint(int(m.group(1)), part)
            _word(m.group(2), part)
            out += part
            return _CLAIM
    elif reason is None and (m := _ACCEPTED_RE.fullmatch(detail)) is not None:
        _word(m.group(1), part)
        _ids(m.group(2), part)
        out += part
        return _ACCEPTED
    return None


def pack_event(base: int, at: int, state: int, reason: str | None,
               detail: str | None) -> bytes:
    """One event, to append to its message's log. ``base``: the message's ``created_at`` and
    ``at`` its time, in microseconds; ``state``: the state's code."""
    head = state if state < 15 else 15
    body = bytearray()
    _zigzag(at - base, body)
    if state >= 15:
        _varint(state, body)
    if detail is None:
        form = _PLAIN if reason is None else _REASON
        if reason is not None:
            _word(reason, body)
    else:
        template = _template(state, reason, detail, body)
        if template is not None:
            form = template
        elif reason is None:
            form = _DETAIL
            _text(detail, body)
        else:
            form = _BOTH
            _word(reason, body)
            _text(detail, body)
    return bytes((head | form << 4,)) + body


def pack_events(base: int, events: Iterable[Event]) -> bytes:
    return b"".join(pack_event(base, at, state, reason, detail)
                    for at, state, reason, detail in events)


def unpack_events(base: int, log: bytes) -> Iterator[Event]:
    """The events of a log, in the order they were appended."""
    r = _Reader(log)
    end = len(log)
    while r.i < end:
        head = log[r.i]
        r.i += 1
        state, form = head & 0x0F, head >> 4
        n = r.varint()
        at = base + (n >> 1 if not n & 1 else -(n >> 1) - 1)
        if state == 15:
            state = r.varint()
        reason: str | None = None
        detail: str | None = None
        if form == _REASON:
            reason = r.word()
        elif form == _DETAIL:
            detail = r.text()
        elif form == _BOTH:
            reason, detail = r.word(), r.text()
        elif form == _RECEIPT:
            gw, word = r.word(), r.word()
            reason, detail = "receipt", f"{gw} receipt {word} for {r.ident()}"
        elif form == _RECEIPT_OF_STATE:
            gw = r.word()
            reason, detail = "receipt", f"{gw} receipt {_STATE_NAMES[state]} for {r.ident()}"
        elif form == _CLAIM:
            n = r.varint()
            reason, detail = "submitting", f"attempt {n} via {r.word()}"
        elif form == _ACCEPTED:
            gw = r.word()
            detail = f"{gw} accepted, smsc ids {r.ids()}"
        elif form == _PARTS:
            gw, done, total = r.word(), r.varint(), r.varint()
            reason, detail = "receipt", f"{gw} receipts: {done} of {total} parts delivered"
        elif form != _PLAIN:
            raise ValueError(f"packed history: unknown event form {form}")
        yield at, state, reason, detail
