"""A call a person names by id (``explain CALLID``, ``/api/calls/ID``): which (PBX, call id) it is.

A call is (PBX, call id): PBXs without Asterisk's ``systemname`` number their calls alike
(``<epoch>.<n>``), so an id alone may name calls on two PBXs. A person may give the id alone
(found when one PBX has it), ``PBX:CALLID``, or the PBX beside it (``--pbx``, ``?pbx=``); an
id on two PBXs without one of those is refused naming the PBXs, never guessed.
"""

from __future__ import annotations

from typing import Protocol

from agent.errors import CallLookupError
from agent.store.base import CallFilter, CallSummary, MessageFilter, MessageRow

#: Calls (and message rows) read to learn which PBXs have an id: more than two is already
#: ambiguous, so a few are plenty.
_PEEK = 20


class CallsByKey(Protocol):
    """What the look-up reads: the calls view and the SMS log, filtered by id and PBX."""

    async def list_calls(self, filters: CallFilter) -> list[CallSummary]: ...

    async def list_messages(self, filters: MessageFilter) -> list[MessageRow]: ...


async def _pbxes_with(store: CallsByKey, call_id: str, pbx: str | None) -> list[str]:
    """The PBXs that have a call (or, for a call never stored, a message) with this id."""
    calls = await store.list_calls(CallFilter(call_id=call_id, pbx=pbx, limit=_PEEK))
    found = {c.pbx or c.record.pbx for c in calls}
    if not found:
        rows = await store.list_messages(MessageFilter(call_id=call_id, pbx=pbx, limit=_PEEK))
        found = {r.pbx for r in rows}
    return sorted(found)


async def find_call(store: CallsByKey, given: str, pbx: str | None = None) -> tuple[str, str]:
    """``(pbx, call_id)`` of the call ``given`` names: ``CALLID`` or ``PBX:CALLID``, with
    ``pbx`` (a ``--pbx`` option) if the person gave one. Raises ``CallLookupError`` when no
    such call is stored, or when the id is on several PBXs and none was named."""
    given = given.strip()
    found = await _pbxes_with(store, given, pbx)
    call_id = given
    if not found and pbx is None and ":" in given:
        # PBX:CALLID (a call id with a colon in it was tried whole first)
        named, _, rest = given.partition(":")
        if named and rest:
            found = await _pbxes_with(store, rest, named)
            call_id = rest
    if len(found) == 1:
        return found[0], call_id
    if not found:
        where = f" on PBX {pbx}" if pbx is not None else ""
        raise CallLookupError(f"{given}: no call with this id{where}")
    names = ", ".join(found)
    raise CallLookupError(
        f"{given}: PBXs {names} each have a call with this id; name one as PBX:CALLID"
        f" (e.g. {found[0]}:{given})", tuple(found))
