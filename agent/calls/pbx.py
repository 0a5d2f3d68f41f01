"""What a PBX's channels are: trunk or phone (call direction), hangup causes as CDR dispositions,
and the agent directory's keys (extension, endpoint or interface). Pure: no I/O.

Direction is decided from the originator's channel, first rule that knows wins:

1. ``pbx``: its endpoint named in ``pbx.trunks`` / ``pbx.phones`` (rules.yaml), then its first
   dialplan context in ``pbx.inbound_contexts`` / ``pbx.internal_contexts``: the operator's word;
2. ``detected``: what the PBX's own PJSIP configuration says the endpoint is (an identify
   section, a registration or outbound auth to it: a trunk; a hint or an inbound auth: a phone),
   read over AMI at each login by ``agent.ami.inventory``;
3. ``fallback``: context patterns rules.yaml gives for when detection could not read the
   endpoints (an AMI user without the ``system`` class, CDR rows of an endpoint since removed):
   ``pbx.fallback_inbound_contexts`` / ``pbx.fallback_internal_contexts`` (the sample rules.yaml
   lists FreePBX's and the Asterisk samples' names). A guess, said as one in ``how``. The code
   knows no context name: a PBX's dialplan is its own;
4. ``caller_id``: a phone's caller id is its extension (a short number); a call from a
   carrier shows a full national or E.164 number, or none at all (withheld).

Each answer says which rule decided and how (``Origin.rule``, ``Origin.how``): call records
carry it (``direction_by``), ``aftercall doctor`` and ``explain`` show it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from agent.calls.state import extension
from agent.sms.numbers import classify

__all__ = [
    "Detected",
    "Directory",
    "Origin",
    "PbxProfile",
    "as_directory",
    "cdr_disposition",
    "endpoint_of",
    "is_extension",
    "receive_clock",
]

#: Asterisk's ``cdr_object_set_disposition`` (main/cdr.c): the causes that change a CDR's
#: disposition; any other cause of a call nobody answered leaves it at "NO ANSWER".
_CAUSE_DISPOSITION = {
    17: "BUSY",  # AST_CAUSE_USER_BUSY
    34: "FAILED",  # AST_CAUSE_CONGESTION (cdr.conf congestion=no, the default)
    3: "FAILED",  # AST_CAUSE_NO_ROUTE_DESTINATION
    20: "FAILED",  # AST_CAUSE_UNREGISTERED (subscriber absent)
    16: "NO ANSWER",  # AST_CAUSE_NORMAL_CLEARING
    19: "NO ANSWER",  # AST_CAUSE_NO_ANSWER
}


def cdr_disposition(cause: int | None) -> str:
    """The disposition Asterisk's CDR gives an unanswered call that ended with ``cause``:
    ``BUSY``, ``FAILED`` or ``NO ANSWER`` (no cause at all: ``FAILED``, as cdr.c does)."""
    if cause is None or cause == 0:
        return "FAILED"
    return _CAUSE_DISPOSITION.get(cause, "NO ANSWER")


def endpoint_of(channel: str | None) -> tuple[str | None, str | None]:
    """``PJSIP/trunk-0000001a`` -> (``PJSIP``, ``trunk``). Local channels give their exten."""
    if not channel:
        return None, None
    tech, slash, _ = channel.partition("/")
    return (tech if slash else None), extension(channel)


def is_extension(number: str | None) -> bool:
    """A phone's caller id: 1 to 6 digits (a carrier shows a full number, or nothing)."""
    return number is not None and 0 < len(number) <= 6 and number.isdigit()


_GLOB = frozenset("*?[")


def _matches(value: str | None, patterns: Iterable[str]) -> bool:
    return value is not None and any(fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Detected:
    """What the PBX's configuration says an endpoint is: ``trunk`` or ``phone``, and why."""

    kind: str
    why: str  # "identify carrier7-ip matches 127.0.0.1", "hint 2001@staff watches it" ...


@dataclass(frozen=True, slots=True)
class Origin:
    """Who placed a call: ``trunk`` (a carrier: inbound) or ``phone`` (outbound/internal)."""

    trunk: bool
    how: str  # "pbx.trunks", "detected: identify ...", "pbx.fallback_inbound_contexts from-pstn (a guess)" ...
    rule: str = "caller_id"  # "pbx", "detected", "fallback" or "caller_id"

    @property
    def known(self) -> bool:
        """Decided from what the endpoint is (configured or detected), not from a guess."""
        return self.rule in ("pbx", "detected")


@dataclass(frozen=True)
class PbxProfile:
    """The ``pbx:`` section of rules.yaml (with its fallback context patterns) and what
    detection found.
    ``name`` goes on every call record (settings ``AFTERCALL_PBX``)."""

    name: str = "default"
    trunks: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    inbound_contexts: tuple[str, ...] = ()
    internal_contexts: tuple[str, ...] = ()
    region: str = "IN"
    #: Context patterns used only when neither the above nor detection knows (rule 3).
    fallback_inbound: tuple[str, ...] = ()
    fallback_internal: tuple[str, ...] = ()
    #: Endpoint name -> what the PBX's configuration says it is (agent.ami.inventory).
    detected: Mapping[str, Detected] = field(default_factory=dict, compare=False, hash=False)

    def endpoint_kind(self, channel: str | None) -> str | None:
        """``trunk`` / ``phone`` when the endpoint is named in ``pbx:`` (by name, interface or
        an fnmatch pattern such as ``DAHDI/*``), else None."""
        tech, ep = endpoint_of(channel)
        if ep is None:
            return None
        iface = f"{tech}/{ep}" if tech else ep
        for kind, names in (("trunk", self.trunks), ("phone", self.phones)):
            if ep in names or iface in names or any(
                    fnmatchcase(iface, n) or fnmatchcase(ep, n) for n in names if _GLOB & set(n)):
                return kind
        return None

    def detected_kind(self, channel: str | None) -> Detected | None:
        """What detection says of a PJSIP channel's endpoint (None: not known)."""
        tech, ep = endpoint_of(channel)
        if ep is None or not self.detected or (tech or "").upper() != "PJSIP":
            return None
        return self.detected.get(ep)

    def origin(self, channel: str | None, context: str | None, caller: str | None) -> Origin:
        """Classify a call's originator from its channel name, first context and caller id."""
        kind = self.endpoint_kind(channel)
        if kind is not None:
            return Origin(kind == "trunk", f"pbx.{kind}s", "pbx")
        if _matches(context, self.inbound_contexts):
            return Origin(True, f"pbx.inbound_contexts {context}", "pbx")
        if _matches(context, self.internal_contexts):
            return Origin(False, f"pbx.internal_contexts {context}", "pbx")
        found = self.detected_kind(channel)
        if found is not None:
            return Origin(found.kind == "trunk", f"detected {found.kind}: {found.why}",
                          "detected")
        if _matches(context, self.fallback_inbound):
            return Origin(True, f"pbx.fallback_inbound_contexts {context} (a guess)", "fallback")
        if _matches(context, self.fallback_internal):
            return Origin(False, f"pbx.fallback_internal_contexts {context} (a guess)",
                          "fallback")
        if is_extension(caller):
            return Origin(False, f"caller id {caller} is an extension")
        return Origin(True, f"caller id {classify(caller, self.region).kind}")

    def far_is_trunk(self, channel: str | None) -> bool:
        """A dialled leg that is a trunk (an outbound call's carrier leg) is nobody's agent."""
        kind = self.endpoint_kind(channel)
        if kind is None:
            found = self.detected_kind(channel)
            kind = found.kind if found is not None else None
        return kind == "trunk"


@dataclass
class Directory:
    """rules.yaml's ``agents:``, keyed by extension (``2001``), endpoint (``agent1``) or
    interface (``PJSIP/agent1``, ``Local/2001@from-queue``). ``lookup`` takes every name the
    tracker knows for an agent and returns the first entry found; ``matched`` remembers which
    keys ever matched, so ``check``/``doctor`` can say which never did."""

    entries: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    matched: set[str] = field(default_factory=set)
    _index: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {}
        for key in self.entries:
            self._index.setdefault(key, key)
            norm = key
            if "/" in key:
                tech, _, res = key.partition("/")
                if tech.lower() == "local":
                    # Local/2001@from-queue/n -> the extension 2001
                    norm = res.split("@", 1)[0]
                else:
                    norm = res.split("/", 1)[0]
            self._index.setdefault(norm, key)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __getitem__(self, key: str) -> tuple[str | None, str | None]:
        return self.entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str | None, default: tuple[str | None, str | None] = (None, None)
            ) -> tuple[str | None, str | None]:
        """Mapping-style lookup by one name (kept for callers that hold a plain dict)."""
        hit = self.lookup(name)
        return hit[1] if hit else default

    def lookup(self, *names: str | None) -> tuple[str, tuple[str | None, str | None]] | None:
        """(directory key, (name, mobile)) of the first name that is in the directory."""
        for n in names:
            if not n:
                continue
            key = self._index.get(n)
            if key is None and "/" in n:
                key = self._index.get(endpoint_of(n)[1] or "")
            if key is not None:
                self.matched.add(key)
                return key, self.entries[key]
        return None

    def unmatched(self) -> list[str]:
        return [k for k in self.entries if k not in self.matched]


def as_directory(agents: Mapping[str, tuple[str | None, str | None]] | Directory | None
                 ) -> Directory:
    if isinstance(agents, Directory):
        return agents
    return Directory(dict(agents or {}))


def receive_clock(wall: Callable[[], float] = time.time,
                  mono: Callable[[], float] = time.monotonic) -> Callable[[], float]:
    """The agent's receive time for events without a ``Timestamp`` header: epoch seconds
    anchored to the wall clock once, then advanced by the monotonic clock, so a clock step
    (NTP, a VM resumed) can never make a call end before it began."""
    w0, m0 = wall(), mono()
    return lambda: w0 + (mono() - m0)
