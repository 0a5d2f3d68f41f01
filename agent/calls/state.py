"""Per-call and per-channel tracking state, its transitions, and AMI header value helpers."""

from __future__ import annotations

import sys
from collections.abc import Mapping

Event = Mapping[str, "str | list[str]"]

#: Longest header value kept; a PBX (or an attacker on the AMI link) can send anything.
MAX_VALUE = 256
MAX_VARS = 64
MAX_TAGS = 32

#: Where the conversation ended, before it is mapped onto caller/agent by direction.
SIDE_ROOT, SIDE_FAR, SIDE_SYSTEM = 1, 2, 3

#: Channel kinds. ROOT is the call's originator (Uniqueid == Linkedid); LOCAL is a helper
#: half of a Local/ channel pair, which is never a party to the call; FAR is any other leg.
ROOT, FAR, LOCAL = 0, 1, 2

#: Tags saying where a caller who never reached a person left (disposition ``abandoned``): in
#: the dialplan after the PBX answered them (a greeting, an IVR menu) before any phone rang,
#: or in a queue. Live tracking and CDR recovery add the same ones.
LEFT_IN_IVR, LEFT_IN_QUEUE = "left_in_ivr", "left_in_queue"

#: Set in ``vars`` when a record could not be built from a complete event history.
INCOMPLETE_VAR = "aftercall_incomplete"

# CALLERID(num)/(name) placeholders chan_pjsip and the core use for "nothing".
_NO_VALUE = frozenset({"", "<unknown>", "unknown"})
_HEX = frozenset("0123456789abcdefABCDEF")
_intern = sys.intern


def text(ev: Event, key: str) -> str | None:
    """One header as a bounded string. A repeated header (a list) yields its last value."""
    v = ev.get(key)
    if v.__class__ is not str:
        if isinstance(v, list) and v and isinstance(v[-1], str):
            v = v[-1]
        else:
            return None
    return v if len(v) <= MAX_VALUE else v[:MAX_VALUE]  # type: ignore[return-value]


def values(ev: Event, key: str) -> list[str] | tuple[str, ...]:
    """A repeatable header (ChanVariable) as a sequence, whether the parser gave one or many."""
    v = ev.get(key)
    if v.__class__ is str:
        return (v,)  # type: ignore[return-value]
    if isinstance(v, list):
        return v
    return ()


def number(value: str | None) -> str | None:
    """A caller-id field, with Asterisk's placeholders for "nothing" mapped to None."""
    if value is None or value in _NO_VALUE:
        return None
    return value


#: Latest event time believed (year 5138): a record's datetimes must be representable.
MAX_TS = 1e11


def valid_ts(ts: float) -> bool:
    return 0 <= ts < MAX_TS  # False for NaN too


def timestamp(value: str | None) -> float | None:
    """An event's ``Timestamp`` (epoch seconds with microseconds), None when unusable."""
    if not value or len(value) > 32:
        return None
    try:
        ts = float(value)
    except ValueError:
        return None
    return ts if valid_ts(ts) else None


def cause(value: str | None) -> int | None:
    # isascii: isdigit() alone takes "²", which int() refuses
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 3:
        return None
    return int(value)


def extension(name: str | None) -> str | None:
    """The endpoint (or extension) a channel or interface name is of, as each channel driver
    names its channels: ``PJSIP/2001-00000017``, ``SIP/2001-0000001a`` (``%08x``),
    ``Local/2001@ctx-00000001;1``, ``PJSIP/2001`` -> ``2001``; ``IAX2/site-b-1234`` (the call
    number in decimal) -> ``site-b``; DAHDI's ``DAHDI/i1/9876543210-1a`` (ISDN span 1) ->
    ``i1`` and ``DAHDI/3-1`` (channel 3) -> ``3``."""
    if not name:
        return None
    tech, slash, res = name.partition("/")
    if not slash:
        tech, res = "", name
    if tech == "DAHDI":
        return _dahdi(res)
    res = res.split("@", 1)[0].split(";", 1)[0]
    # Channel names end in "-" plus a counter: 8+ hex digits for most drivers, IAX2's call
    # number in decimal. Interfaces (and names such as "my-phone") carry none, so only such
    # a suffix is stripped.
    base, dash, suffix = res.rpartition("-")
    if dash and base and (len(suffix) >= 8 and _HEX.issuperset(suffix)
                          or tech == "IAX2" and suffix.isdigit()):
        res = base
    return _intern(res) if res else None


def _dahdi(res: str) -> str | None:
    """``i1/9876543210-1a`` -> ``i1`` (the ISDN span), ``3-1`` -> ``3`` (the channel);
    interfaces (``i1``, ``g0``, ``3``) as they are."""
    res = res.split("/", 1)[0]
    if not res.startswith(("i", "g", "r", "G", "R")):
        res = res.split("-", 1)[0]
    return _intern(res) if res else None


class Chan:
    """One channel: which call it belongs to and what it has done so far."""

    __slots__ = ("call", "counted", "ending", "kind", "lid", "name", "uid", "up")

    def __init__(self, uid: str, lid: str, name: str, call: Call, kind: int) -> None:
        self.uid = uid
        self.lid = lid  # the Linkedid this channel last reported
        self.name = name
        self.call = call
        self.kind = kind
        self.up = False  # reported ChannelState 6 (Up)
        self.counted = False  # a FAR leg that answered: counted in call.far_up
        self.ending = False  # hangup requested or done: no longer counted as talking


class Call:
    """Everything learnt about one call so far. Mutable; records are frozen snapshots of it."""

    __slots__ = (
        "abandoned",
        "accountcode",
        "agent",
        "agent_alias",
        "agent_cid_name",
        "aliases",
        "answered",
        "attached_vars",
        "call_id",
        "caller_name",
        "caller_num",
        "connected_sent",
        "dial_status",
        "dialled",
        "end_side",
        "end_soft",
        "ended",
        "far_up",
        "hangup_cause",
        "has_party",
        "held",
        "inbound",
        "incomplete",
        "language",
        "last",
        "last_cause",
        "live",
        "member_name",
        "origin_how",
        "queue",
        "queue_joined",
        "ringing",
        "root_ended",
        "started",
        "tags",
        "talk_end",
        "vars",
        "voicemail",
    )

    def __init__(self, call_id: str, ts: float) -> None:
        self.call_id = call_id
        self.live: list[Chan] = []
        self.aliases: list[str] | None = None  # other Linkedids merged into this call
        self.started = ts
        self.last = ts
        self.ended: float | None = None
        self.inbound: bool | None = None  # decided by the originator's first context
        self.dialled: str | None = None  # the originator's first Exten: the DID when inbound
        self.caller_num: str | None = None
        self.caller_name: str | None = None
        self.language: str | None = None
        self.accountcode: str | None = None
        self.queue: str | None = None
        self.queue_joined = False
        self.abandoned = False
        self.voicemail = False
        self.dial_status: str | None = None
        self.agent: str | None = None
        #: Another name of the agent: its extension (caller id of its leg) or queue interface.
        self.agent_alias: str | None = None
        #: Phones a Dial() is ringing (DestUniqueid -> extension, caller-id name, alias), so a
        #: leg that refuses at once (busy) does not stay the agent while another rings on.
        self.ringing: dict[str, tuple[str, str | None, str | None]] | None = None
        self.origin_how: str | None = None  # how direction was decided (calls.pbx.Origin)
        self.member_name: str | None = None
        self.agent_cid_name: str | None = None
        self.answered: float | None = None
        #: The PBX answered the originator's own channel (Answer() before a greeting, an IVR
        #: menu or a queue): Asterisk's CDR calls that ANSWERED; no person has answered yet.
        self.held = False
        self.far_up = 0  # FAR legs that answered and have not hung up
        self.talk_end: float | None = None
        self.end_side = 0  # SIDE_* of the request that ended the conversation; 0 = unknown
        self.end_soft = False
        self.hangup_cause: int | None = None
        self.last_cause: int | None = None
        self.connected_sent = False
        self.root_ended = False  # the originator's leg is going away
        self.has_party = False  # saw a channel that is not Local/: worth a record
        self.tags: list[str] | None = None
        self.vars: dict[str, str] | None = None
        self.attached_vars: dict[str, str] | None = None
        self.incomplete: str | None = None

    def add_tags(self, raw: str) -> None:
        tags = self.tags
        for tag in raw.split(","):
            tag = tag.strip()
            if not tag:
                continue
            if tags is None:
                tags = self.tags = []
            if tag not in tags and len(tags) < MAX_TAGS:
                tags.append(_intern(tag) if len(tag) <= 32 else tag)

    def set_var(self, key: str, value: str, *, attached: bool = False) -> None:
        store = self.attached_vars if attached else self.vars
        if store is None:
            store = {}
            if attached:
                self.attached_vars = store
            else:
                self.vars = store
        if key in store or len(store) < MAX_VARS:
            store[_intern(key) if len(key) <= 32 else key] = value

    def absorb(self, src: Call) -> list[Chan]:
        """Take over ``src`` (Asterisk relinked it into this call); returns the moved legs."""
        self.started = min(self.started, src.started)
        self.last = max(self.last, src.last)
        self.has_party = self.has_party or src.has_party
        self.voicemail = self.voicemail or src.voicemail
        self.held = self.held or src.held
        self.connected_sent = self.connected_sent or src.connected_sent
        for tag in src.tags or ():
            self.add_tags(tag)
        for store, attached in ((src.vars, False), (src.attached_vars, True)):
            for k, v in (store or {}).items():
                self.set_var(k, v, attached=attached)
        for c in src.live:
            c.call = self
            if c.kind == ROOT:
                c.kind = FAR  # one originator per call: the older call's
            self.live.append(c)
        self.far_up += src.far_up
        if src.answered is not None and (self.answered is None or src.answered < self.answered):
            self.answered = src.answered
        return src.live

    # -- transitions shared by the event handlers ---------------------------------------------

    def rung(self, ext: str | None, member: str | None, cid: str | None,
             alias: str | None = None) -> None:
        """The agent leg being rung (or answering) is ``ext``."""
        if ext is None:
            return
        if ext != self.agent:
            self.agent = ext
            self.member_name = None
            self.agent_cid_name = None
            self.agent_alias = None
        if alias and alias != ext:
            self.agent_alias = alias
        if member:
            self.member_name = member
        if cid:
            self.agent_cid_name = cid

    def answer(self, ch: Chan | None, ts: float, cid: str | None,
               alias: str | None = None, *, agent_leg: bool = True) -> bool:
        """A leg other than the originator answered (``ch`` None: a Local/ or unknown leg).
        Returns True when this is the moment to emit call_connected."""
        if ch is not None:
            if ch.counted or ch.ending:
                return False
            ch.counted = True
            ch.up = True
            self.far_up += 1
            if self.inbound is not False and agent_leg:
                self.rung(extension(ch.name), None, cid, alias)
        if self.answered is None:
            self.answered = ts
        self.resume_talk()
        if not self.connected_sent and self.has_party:
            self.connected_sent = True
            return True
        return False

    def resume_talk(self) -> None:
        """Another leg took over while the originator is still there (a transfer): the
        conversation goes on, whoever left before."""
        if self.root_ended:
            return
        if self.end_side == SIDE_FAR:
            self.end_side = 0
            self.end_soft = False
        self.talk_end = None

    def ending(self, ch: Chan, ts: float, *, side: bool, soft: bool = False) -> None:
        """A leg is going away: does that end the conversation, and who ended it? ``side``:
        this is a hangup request (HangupRequest or, ``soft``, SoftHangupRequest)."""
        if ch.ending:
            return
        if ch.kind == ROOT:
            ch.ending = True
            self.root_ended = True
            if self.talk_end is None and self.answered is not None:
                self.talk_end = ts
            if side and not self.end_side:
                self.end_side = SIDE_ROOT
                self.end_soft = soft
        elif ch.kind == FAR and ch.counted:
            ch.ending = True
            self.far_up -= 1
            if self.far_up == 0:
                if self.talk_end is None:
                    self.talk_end = ts
                if side and not self.end_side:
                    self.end_side = SIDE_FAR
                    self.end_soft = soft


def duration(value: str | None) -> float | None:
    """CoreShowChannel's ``Duration: HH:MM:SS``."""
    if not value:
        return None
    parts = value.split(":")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        return None
    h, m, s = (int(p) for p in parts)
    return float(h * 3600 + m * 60 + s)
