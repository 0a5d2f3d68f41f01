"""The PBX's own account of its endpoints, read over AMI: which are trunks, which are phones, why.

A context name says nothing reliable about who is calling: every PBX names its contexts as it
likes. What PJSIP is configured to do with a peer does:

- an ``identify`` section points at it: Asterisk recognises it by its address (or a header),
  as one does a carrier, whose INVITEs carry the caller's number, not our endpoint's name;
- the PBX registers to it (an outbound ``registration`` naming it, or sharing its
  ``outbound_auth``), or logs in to it (``outbound_auth``): it is the PBX's provider;
- a dialplan ``hint`` watches it (``exten => 2001,hint,PJSIP/ops1``): it is somebody's phone;
- it logs in to the PBX (an inbound ``auth``), or registered its own contacts: a phone;
- none of those: Asterisk can only match its calls by the endpoint's own name in From (or its
  auth user), as a phone presents itself: a phone.

Actions and the AMI write class each needs (Asterisk 22, res_pjsip): ``PJSIPShowEndpoints`` and
``PJSIPShowEndpoint`` need ``system``; ``PJSIPShowRegistrationsOutbound`` and
``ExtensionStateList`` are also open to ``reporting`` (the README's least-privilege user). A
user without ``system`` gets phones from hints and trunks from line registrations only; the
rest is decided further down ``calls.pbx``'s order. ``classify`` is pure; ``read_inventory``
runs the actions through any ``Action`` (the agent's AmiClient, doctor's bare session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.calls.pbx import Detected
from agent.errors import AmiError

log = structlog.get_logger("aftercall.pbx")

Block = Mapping[str, Any]
#: Runs one AMI action: (its response, the events of its list, without the Complete one).
Action = Callable[[str, Mapping[str, str]], Awaitable[tuple[Block, list[Block]]]]

#: What each action needs beyond ``reporting`` (for doctor and the log).
NEEDS = {"PJSIPShowEndpoints": "system", "PJSIPShowEndpoint": "system",
         "PJSIPShowRegistrationsOutbound": "system or reporting",
         "ExtensionStateList": "call or reporting"}


@dataclass(frozen=True)
class Inventory:
    """What the PBX said about its endpoints. ``endpoints``: name -> Detected (trunk/phone
    and why). ``refused``: action -> Asterisk's reason (``Permission denied``, an unknown
    action when a module is not loaded); ``complete``: every endpoint's details were read."""

    endpoints: Mapping[str, Detected] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    complete: bool = False

    def kinds(self, kind: str) -> list[str]:
        return sorted(n for n, d in self.endpoints.items() if d.kind == kind)

    def missing_classes(self) -> list[str]:
        """The write classes whose absence cost detection (``system``...), for doctor."""
        return sorted({NEEDS.get(a, "?") for a, why in self.refused.items()
                       if "ermission" in why})


def _split(value: Any) -> list[str]:
    """``Auths: a,b,`` -> [a, b]; a header repeated by the parser comes as a list."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [p.strip() for v in items for p in str(v).split(",") if p.strip()]


def _count(value: Any) -> int:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else 0


def _hinted(hints: Iterable[Block]) -> dict[str, str]:
    """Endpoint -> ``exten@context`` of the first hint that watches ``PJSIP/<endpoint>``."""
    out: dict[str, str] = {}
    for h in hints:
        for dev in str(h.get("Hint") or "").split("&"):
            tech, _, name = dev.strip().partition("/")
            if tech.upper() == "PJSIP" and name:
                out.setdefault(name, f"{h.get('Exten')}@{h.get('Context')}")
    return out


def classify(endpoints: Iterable[Block], details: Mapping[str, list[Block]],
             registrations: Iterable[Block], hints: Iterable[Block]) -> dict[str, Detected]:
    """Trunk or phone for every endpoint the PBX listed (``EndpointList`` events), from each
    one's ``PJSIPShowEndpoint`` events (``details``; absent: not readable), the outbound
    registrations and the dialplan hints. Endpoints the PBX did not list (a user without the
    ``system`` class) are classified from registrations (trunks) and hints (phones) alone."""
    regs = list(registrations)
    reg_auth = {a: str(r.get("ObjectName")) for r in regs for a in _split(r.get("OutboundAuth"))}
    reg_line = {str(r.get("Endpoint")): str(r.get("ObjectName")) for r in regs
                if r.get("Endpoint")}
    hinted = _hinted(hints)
    out: dict[str, Detected] = {}
    listed = {str(e.get("ObjectName")): e for e in endpoints if e.get("ObjectName")}
    for name, ep in listed.items():
        events = details.get(name, [])
        identify = [e for e in events if e.get("Event") == "IdentifyDetail"]
        outbound_auths = _split(ep.get("OutboundAuths"))
        auths = _split(ep.get("Auths"))
        shared = [a for a in outbound_auths if a in reg_auth]
        if identify:
            i = identify[0]
            match = ", ".join(_split(i.get("Match"))) or str(i.get("MatchHeader") or "?")
            out[name] = Detected("trunk", f"identify {i.get('ObjectName')} matches {match}")
        elif name in reg_line or shared:
            reg = reg_line.get(name) or reg_auth[shared[0]]
            out[name] = Detected("trunk", f"the PBX registers to it (registration {reg})")
        elif name in hinted:
            out[name] = Detected("phone", f"hint {hinted[name]} watches it")
        elif auths:
            out[name] = Detected("phone", f"it logs in to the PBX (auth {auths[0]})")
        elif registered := sum(_count(a.get("ContactsRegistered")) for a in events
                               if a.get("Event") == "AorDetail"):
            out[name] = Detected("phone", f"it registered {registered} contact(s) to the PBX")
        elif outbound_auths:
            out[name] = Detected("trunk", f"the PBX logs in to it (outbound_auth "
                                          f"{outbound_auths[0]})")
        elif name in details:
            out[name] = Detected("phone", "no identify, registration or outbound auth: "
                                          "Asterisk matches it by its own name, as a phone")
    for name, reg in reg_line.items():
        out.setdefault(name, Detected("trunk", f"the PBX registers to it (registration {reg})"))
    for name, where in hinted.items():
        out.setdefault(name, Detected("phone", f"hint {where} watches it"))
    return out


async def read_inventory(action: Action) -> Inventory:
    """Ask the PBX. Never raises for a refused action: it is noted in ``refused`` and the
    inventory is built from what was answered. AMI errors (timeouts, a lost link) propagate."""
    refused: dict[str, str] = {}

    async def listed(name: str, **headers: str) -> list[Block] | None:
        resp, events = await action(name, headers)
        if str(resp.get("Response", "")).lower() != "success":
            msg = str(resp.get("Message") or "refused")
            # "no endpoints found"-style answers are an empty list, not a refusal.
            if "ermission" in msg or "nvalid" in msg or "nknown" in msg:
                refused[name] = msg
                return None
            return []
        return events

    endpoints = await listed("PJSIPShowEndpoints") or []
    details: dict[str, list[Block]] = {}
    for ep in endpoints:
        name = str(ep.get("ObjectName") or "")
        if not name or "PJSIPShowEndpoint" in refused:
            continue
        got = await listed("PJSIPShowEndpoint", Endpoint=name)
        if got is not None:
            details[name] = got
    registrations = await listed("PJSIPShowRegistrationsOutbound") or []
    hints = await listed("ExtensionStateList") or []
    complete = bool(endpoints) and len(details) == len(endpoints)
    return Inventory(classify(endpoints, details, registrations, hints), refused, complete)


def client_action(client: Any) -> Action:
    """An ``Action`` over the agent's AmiClient (panoramisk collects a list's events)."""

    async def run(name: str, headers: Mapping[str, str]) -> tuple[Block, list[Block]]:
        # as_list is left to panoramisk: an Error answer to a list action is a single message.
        resp = await client.action({"Action": name, **headers}, as_list=None, timeout=10)
        if isinstance(resp, list):
            head, rest = (resp[0], resp[1:]) if resp else ({}, [])
            return head, [m for m in rest if not str(m.get("Event", "")).endswith("Complete")]
        return resp, []

    return run


class EndpointWatch:
    """Keeps the agent's view of the PBX's endpoints current: read after each login (before
    calls are recovered from the CDR, so they read as live ones), and every ``every`` seconds,
    which is how a ``pjsip reload`` or new hints reach it (the ``Reload`` event needs the
    ``system`` read class). A refused action is said once per agent, not at every read; a read
    that fails keeps the previous inventory. ``apply`` hands each new inventory on."""

    def __init__(self, apply: Callable[[Inventory], None], *, every: float = 120.0,
                 pbx: str = "default") -> None:
        self.apply = apply
        self.pbx = pbx
        self.every = every
        self.inventory: Inventory | None = None
        self._said: set[str] = set()
        self._pending: asyncio.Task[Inventory | None] | None = None

    async def refresh(self, client: Any) -> Inventory | None:
        try:
            inv = await read_inventory(client_action(client))
        except AmiError as e:
            log.warning("pbx_endpoints_unread", pbx=self.pbx, error=str(e),
                        kept="the previous inventory")
            return None
        except Exception as e:  # noqa: BLE001 - an odd answer must not stop the agent
            log.error("pbx_endpoints_unread", pbx=self.pbx, error=f"{type(e).__name__}: {e}",
                      kept="the previous inventory")
            return None
        refused = {a: w for a, w in inv.refused.items() if a not in self._said}
        if refused:
            self._said.update(refused)
            log.warning("pbx_endpoints_not_readable", pbx=self.pbx, refused=refused,
                        needs=[NEEDS.get(a, "?") for a in refused],
                        using="hints, line registrations, rules.yaml pbx: (its fallback "
                              "contexts too), caller id")
        old = self.inventory
        if old is None or dict(old.endpoints) != dict(inv.endpoints):
            log.info("pbx_endpoints_read", pbx=self.pbx, trunks=inv.kinds("trunk"),
                     phones=len(inv.kinds("phone")), complete=inv.complete)
        self.inventory = inv
        self.apply(inv)
        return inv

    async def at_login(self, client: Any, budget: float = 5.0) -> None:
        """Read after a login, waiting at most ``budget`` seconds (a PBX with thousands of
        endpoints answers one action per endpoint): past it the read goes on in the
        background, and what came before it (the previous inventory) stands meanwhile."""
        task = asyncio.create_task(self.refresh(client), name="pbx-endpoints-login")
        self._pending = task  # a reference, so the task is not collected mid-read
        try:
            await asyncio.wait_for(asyncio.shield(task), budget)
        except TimeoutError:
            log.warning("pbx_endpoints_slow", pbx=self.pbx, budget_s=budget, using="the previous inventory "
                        "until the read completes")

    async def run(self, client: Any) -> None:
        """Re-read every ``every`` seconds while connected (the login read is ``refresh``)."""
        while True:
            await asyncio.sleep(self.every)
            if client.connected:
                await self.refresh(client)
