"""What a dialplan hook asks to attach to a call: ``tag=vip&TICKET=123`` -> tags and variables.

One grammar for both hooks: the FastAGI route (``agi://host/attach?tag=vip&TICKET=1``) and the
classic AGI script ``aftercall-attach``, which forwards its arguments to the agent as the
``Attach`` header of an AMI ``UserEvent: AftercallAttach`` raised on the caller's channel.
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

#: The UserEvent name the classic AGI script raises (AMI read class ``user``).
ATTACH_EVENT = "AftercallAttach"
MAX_VALUE = 256
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Keys whose values are tags (case-blind), here and in a CDR userfield (calls.cdr).
TAG_KEYS = frozenset({"tag", "tags", "name"})


def parse_hook(script: str, args: list[str]) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """``tag?name=vip`` (+ AGI args ``k=v``) -> ("tag", ("vip",), {}). Tags come from ``tag``,
    ``tags`` and ``name`` (comma-separated allowed); every other key that is a valid variable
    name becomes a variable; empty values and odd keys are dropped, values cut at 256."""
    path, _, query = script.partition("?")
    pairs = parse_qsl(query, keep_blank_values=False)
    pairs += [tuple(a.split("=", 1)) for a in args if "=" in a]  # type: ignore[misc]
    tags: list[str] = []
    variables: dict[str, str] = {}
    for key, value in pairs:
        value = value.strip()[:MAX_VALUE]
        if not value:
            continue
        if key.lower() in TAG_KEYS:
            tags.extend(t.strip() for t in value.split(",") if t.strip())
        elif _VAR_NAME.match(key):
            variables[key] = value
    return path.strip("/"), tuple(dict.fromkeys(tags)), variables


# -- wrap-up codes ------------------------------------------------------------------------------
# An agent's disposition code (SALE, CALLBACK ...) usually comes after the hangup: from a
# wrap-up feature code the agent dials (``AGI(agi://host/disposition?code=SALE)``), from a
# CRM or the dialplan as ``UserEvent(Wrapup,CallID: <linkedid>,Code: SALE)``, or from a
# hangup handler on the call's own channels (with ``call=${CHANNEL(linkedid)}``).

#: UserEvent names read as wrap-up codes (headers ``Code``, and ``CallID`` or ``Agent``).
WRAPUP_EVENTS = frozenset({"Wrapup", "AftercallWrapup"})
#: A code that arrives while its call is still up rides to the record as this attached var.
WRAPUP_VAR = "AFTERCALL_WRAPUP"
_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


def clean_code(value: str | None) -> str | None:
    """A wrap-up code as rules compare it: 1-32 letters, digits, ``_.-``; else None."""
    value = (value or "").strip()
    return value if _CODE.match(value) else None


@dataclass(frozen=True, slots=True)
class WrapupCode:
    """A wrap-up code for a call that has ended: the call named (its Linkedid), or else the
    agent's most recent call still waiting for one. ``pbx``: the PBX whose call it is (a
    call is (PBX, call id)); None when the hook could not say (FastAGI with several PBXs)."""

    code: str
    call_id: str | None = None
    agent: str | None = None
    pbx: str | None = None
