"""Which AMI actions the agent's user may run beyond what aftercall needs (from ListCommands).

Asterisk answers ``ListCommands`` with only the actions the logged-in user's ``write`` classes
allow, one header per action: ``Originate: Originate a call.  (Priv: originate,all)``. aftercall
needs ``write = reporting`` (CoreShowChannels, to resync after a reconnect); actions that need
no class at all (``Priv: <none>``, e.g. Ping, QueueStatus) are open to every user and cannot be
taken away. ``system`` is optional: with it aftercall reads PJSIP's endpoints to tell trunks
from phones (agent.ami.inventory), so the agent does not warn about it; doctor says what else it
permits (``system_extras``). Anything else is a class the user should not have: a leaked
aftercall secret would let someone originate, redirect or hang up calls, or run CLI commands.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: The write classes aftercall uses.
NEEDED_WRITE = frozenset({"reporting"})
#: Used when granted: PJSIPShowEndpoints/PJSIPShowEndpoint (trunk and phone detection).
OPTIONAL_WRITE = frozenset({"system"})
_PRIV = re.compile(r"\(Priv:\s*([^)]*)\)\s*$")
_NOT_ACTIONS = frozenset({"response", "actionid", "message", "event", "content"})


def _actions(response: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """Action -> its write classes (without ``all``), for every listed action needing one."""
    out: dict[str, tuple[str, ...]] = {}
    for name, value in response.items():
        if not isinstance(value, str) or name.lower() in _NOT_ACTIONS:
            continue
        m = _PRIV.search(value)
        if m is None:
            continue
        classes = tuple(c for c in (p.strip() for p in m.group(1).split(","))
                        if c and c not in ("all", "<none>"))
        if classes:
            out[name] = classes
    return out


def excess_write_actions(response: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """Action -> its write classes, for every listed action that neither ``NEEDED_WRITE`` nor
    a held ``OPTIONAL_WRITE`` class grants (so the user holds another class that allows it).
    A class is held when an action only it grants is listed (ModuleLoad for ``system``)."""
    actions = _actions(response)
    held = {c[0] for c in actions.values() if len(c) == 1}
    allowed = NEEDED_WRITE | (OPTIONAL_WRITE & held)
    return dict(sorted((n, c) for n, c in actions.items() if not allowed.intersection(c)))


def system_extras(response: Mapping[str, object]) -> list[str]:
    """The listed actions that only ``system`` (of the classes aftercall uses) grants, besides
    the PJSIP reads it is granted for: what a leaked secret could also do."""
    return sorted(n for n, c in _actions(response).items()
                  if "system" in c and not NEEDED_WRITE.intersection(c)
                  and not n.startswith("PJSIPShow"))


def describe(username: str, excess: Mapping[str, Iterable[str]]) -> str:
    """One line for the log: what the user can do and how to narrow it."""
    classes = sorted({c for cs in excess.values() for c in cs})
    shown = ", ".join(list(excess)[:8]) + (" ..." if len(excess) > 8 else "")
    return (f"AMI user {username!r} may run {len(excess)} actions aftercall never uses "
            f"({shown}) through write classes among {', '.join(classes)}; set its "
            f"`write = reporting` in manager.conf (see asterisk_conf/manager.conf)")
