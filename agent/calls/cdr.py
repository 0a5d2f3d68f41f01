"""Asterisk's CSV CDR (cdr_csv's Master.csv): rows parsed, grouped by linkedid into call records.

Pure apart from ``CdrTail.read``, which reads the file it is given (blocking: call it through
``asyncio.to_thread``). Used to recover calls that ended while the agent had no AMI link.

The rows themselves (columns, times, ``CDR(userfield)``) are parsed by ``agent.calls.cdr_rows``.

What the CSV knows, compared with the AMI call tracker:

* One row per party-A CDR, written when that channel hangs up. A ``Dial()`` that fails gives
  the dial row (disposition BUSY / NO ANSWER, dstchannel the extension rung) and, as the
  dialplan runs on, a second row without a dstchannel (lastapp ``Hangup``).
* A CDR's disposition is party B's fate, not the caller's: a queue call that no agent took is
  ``NO ANSWER`` although the caller leg was answered by the IVR's ``Answer()``. So a call is
  answered when a row with a dstchannel is ``ANSWERED``; a call whose last row is still in
  ``Queue`` without that is abandoned (the caller hung up in the queue: tag
  ``left_in_queue``); a Queue row followed by more rows (the queue timed out, the dialplan ran
  on) is missed. A caller row ``ANSWERED`` with no dstchannel at all, ended in an application
  other than ``Hangup`` (a greeting's ``Playback``, a menu), is the PBX's own ``Answer()``
  that the caller left before any phone rang: abandoned, tag ``left_in_ivr``, talk time 0
  whatever its billsec.
* For a queue call ``answer`` is the IVR's ``Answer()``, not the agent's pick-up: from CDR,
  ``answered_at`` and ``wait_seconds`` of queue calls exclude the time queued, and
  ``talk_seconds`` (billsec) includes it. Direct ``Dial()`` calls are exact to the second.
* Not in the CSV at all: ``hangup_cause``, ``hangup_by``, ``agent_name`` other than from the
  directory, and channel variables. Tags and variables are available only when the dialplan
  writes them into ``CDR(userfield)`` as ``k=v;k=v`` (see ``parse_userfield``).

Every record carries ``vars["aftercall_source"] = "cdr"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO, Self

from agent.calls.cdr_rows import MAX_ROWS_PER_CALL, SOURCE_VAR, CdrRow, parse_userfield
from agent.calls.pbx import Directory, PbxProfile, as_directory
from agent.calls.state import INCOMPLETE_VAR, LEFT_IN_IVR, LEFT_IN_QUEUE, extension, number
from agent.models import CallRecord, Direction, Disposition
from agent.sms.numbers import classify

__all__ = ["CdrTail", "build_record", "build_records", "group_calls"]

_ANSWERED = "ANSWERED"
_FAILED = frozenset({"FAILED", "CONGESTION"})
_REFUSED = _FAILED | {"BUSY"}
#: Last applications of a row whose channel the dialplan itself ended, not the caller.
_PBX_ENDS = frozenset({"Hangup", "Busy", "Congestion"})


def group_calls(rows: Iterable[CdrRow]) -> dict[str, list[CdrRow]]:
    """Rows by linkedid, each call's rows in CDR sequence order (file order breaks ties)."""
    calls: dict[str, list[CdrRow]] = {}
    for row in rows:
        legs = calls.setdefault(row.linkedid, [])
        if len(legs) < MAX_ROWS_PER_CALL:
            legs.append(row)
    for legs in calls.values():
        legs.sort(key=lambda r: (r.sequence, r.line))
    return calls


def _clid_name(clid: str) -> str | None:
    """``"Ravi Kumar" <+919876543210>`` -> ``Ravi Kumar``; a bare number has no name."""
    lt = clid.rfind("<")
    if lt < 0 or not clid.endswith(">"):
        return None
    name = clid[:lt].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    return number(name.strip())


def _clid_number(clid: str) -> str | None:
    lt = clid.rfind("<")
    if lt >= 0 and clid.endswith(">"):
        return number(clid[lt + 1:-1].strip())
    return number(clid.strip())


_DIAL_TARGET = re.compile(r"^[A-Za-z0-9_]+/([+0-9*#]+)(?:@|,|&|$)")


def _dialled(dst: str, legs: Sequence[CdrRow]) -> str:
    """The number a phone dialled. ``dst`` is the exten where the row was written: ``s`` once
    a Gosub/Macro dial subroutine ran (FreePBX), so the Dial()'s own argument tells instead."""
    if dst and dst.lstrip("+").isdigit():
        return dst
    for r in legs:
        m = _DIAL_TARGET.match(r.lastdata) if r.lastapp == "Dial" else None
        if m:
            return m.group(1)
    return dst


def _disposition(legs: Sequence[CdrRow]) -> tuple[Disposition, str | None]:
    """The disposition of the originator's rows and, for a caller who left before reaching
    anyone, where (the same tags the live tracker adds)."""
    if any(r.dstchannel and r.disposition == _ANSWERED for r in legs):
        return Disposition.ANSWERED, None
    if any(r.lastapp == "VoiceMail" for r in legs):
        return Disposition.VOICEMAIL, None
    last = legs[-1]
    if last.lastapp == "Queue":
        # the caller was still queued when the call ended
        return Disposition.ABANDONED, LEFT_IN_QUEUE
    if any(r.lastapp == "Queue" for r in legs):
        return Disposition.MISSED, None  # the queue gave up (timeout) and the dialplan went on
    dialled = [r for r in legs if r.dstchannel]
    if not dialled and last.disposition == _ANSWERED and last.lastapp not in _PBX_ENDS:
        # ANSWERED with no party B: the PBX's own Answer() (a greeting, an IVR menu), and the
        # caller's row ended in it: the caller left before any phone rang.
        return Disposition.ABANDONED, LEFT_IN_IVR
    # A phone that rang (NO ANSWER) outweighs one that refused at once (a ring group's busy
    # member), whatever order the rows were written in.
    rang = [r for r in dialled if r.disposition not in _REFUSED]
    status = ((rang or dialled)[-1] if dialled else last).disposition
    if status == "BUSY":
        return Disposition.BUSY, None
    if status in _FAILED:
        return Disposition.FAILED, None
    # NO ANSWER: rung out or cancelled by the caller; ANSWERED without a dstchannel that the
    # dialplan itself ended (Hangup()): an IVR that nobody took over. Both are calls a person
    # did not pick up.
    return Disposition.MISSED, None


def build_record(
    legs: Sequence[CdrRow],
    *,
    region: str,
    agents: Mapping[str, tuple[str | None, str | None]] | Directory | None = None,
    pbx: PbxProfile | None = None,
    inbound_contexts: Iterable[str] = (),
    did_context_prefix: str = "did-",
    tag_keys: Iterable[str] = ("SMS_TAG",),
    language_var: str = "SMS_LANG",
) -> CallRecord:
    """One ``call_completed`` record from one call's rows (``group_calls`` order). ``agents``
    and ``pbx`` as for ``CallTracker``: direction comes from what the originator's channel is
    (``calls.pbx``), the same decision the live tracker makes."""
    if not legs:
        raise ValueError("a call needs at least one CDR row")
    lid = legs[0].linkedid
    own = [r for r in legs if r.uniqueid == lid]  # the originator's rows (the caller's leg)
    first = (own or list(legs))[0]
    main = own or list(legs)

    ctx = first.dcontext
    src = first.src or _clid_number(first.clid) or ""
    src_info = classify(src, region)
    profile = pbx or PbxProfile(region=region)
    if inbound_contexts:
        profile = replace(profile, inbound_contexts=profile.inbound_contexts
                          + tuple(inbound_contexts))
    # dcontext is where party A's dialplan was when the row was written (a transfer leaves a
    # caller from the trunk in the phones' context), not its first context: only the pbx:
    # endpoints, detected endpoints and the caller id decide here (a phone showing a full
    # number as its caller id needs pbx.phones, or detection).
    if ctx.startswith(did_context_prefix):
        inbound, direction_by = True, f"cdr dcontext {ctx}"
    else:
        origin = profile.origin(first.channel, None, src)
        inbound, direction_by = origin.trunk, origin.how
    agent: str | None
    alias: str | None = None
    if inbound:
        direction = Direction.INBOUND
        withheld = src_info.kind == "anonymous"
        caller = "anonymous" if withheld else (src_info.e164 or src)
        caller_name = None if withheld else _clid_name(first.clid)
        if ctx.startswith(did_context_prefix) and len(ctx) > len(did_context_prefix):
            did: str | None = ctx[len(did_context_prefix):]
        else:
            did = first.dst if first.dst and first.dst != "s" else None
        dialled = [r for r in legs if r.dstchannel]
        took = [r for r in dialled if r.disposition == _ANSWERED]
        # Nobody took it: the phone that rang on, not one that refused at once (a ring
        # group's busy member), whatever order the rows were written in.
        rang = [r for r in dialled if r.disposition not in _REFUSED]
        pick = took[-1] if took else ((rang or dialled)[-1] if dialled else None)
        agent = extension(pick.dstchannel) if pick else None
    else:
        # An agent's phone placed the call: the party to text is the number dialled.
        dst = _dialled(first.dst, legs)
        dst_info = classify(dst, region)
        direction = Direction.INTERNAL if dst_info.kind == "short_code" else Direction.OUTBOUND
        caller, caller_name, did = dst_info.e164 or dst, None, None
        agent = extension(first.channel)
        alias = src
    name, mobile = None, None
    if agent:
        hit = as_directory(agents).lookup(agent, alias)
        if hit is not None:
            name, mobile = hit[1]

    queue = None
    for r in legs:
        if r.lastapp == "Queue" and r.lastdata:
            queue = r.lastdata.split(",", 1)[0].strip() or queue

    disposition, left_in = _disposition(main)
    started = min(r.start for r in legs)
    ended = max(r.end for r in legs)
    duration = max(0.0, (ended - started).total_seconds())
    answered_at = None
    talk = 0.0
    if disposition is Disposition.ANSWERED:
        took = [r for r in legs if r.dstchannel and r.disposition == _ANSWERED]
        answered_at = min((r.answer for r in took if r.answer is not None), default=None)
        talk = min(duration, float(sum(r.billsec for r in took)))
    wait = (answered_at - started).total_seconds() if answered_at is not None else duration

    tags: list[str] = []
    vars_: dict[str, str] = {}
    for r in legs:
        if r.userfield:
            t, v = parse_userfield(r.userfield, tag_keys=tag_keys)
            tags.extend(x for x in t if x not in tags)
            vars_.update(v)
    if left_in is not None and left_in not in tags:
        tags.append(left_in)
    if first.accountcode:
        vars_.setdefault("accountcode", first.accountcode)
    if not own:
        vars_[INCOMPLETE_VAR] = "cdr_partial"  # the originator's own row is not in the file
    vars_[SOURCE_VAR] = "cdr"
    return CallRecord(
        call_id=lid,
        caller=caller,
        caller_name=caller_name,
        did=did,
        direction=direction,
        queue=queue,
        agent=agent,
        agent_name=name,
        agent_number=mobile,
        disposition=disposition,
        started_at=started,
        answered_at=answered_at,
        ended_at=ended,
        wait_seconds=round(max(0.0, wait), 3),
        talk_seconds=round(talk, 3),
        duration_seconds=round(duration, 3),
        tags=tuple(tags),
        vars=vars_,
        language=vars_.get(language_var),
        pbx=profile.name,
        direction_by=direction_by,
    )


def build_records(
    rows: Iterable[CdrRow],
    *,
    region: str,
    agents: Mapping[str, tuple[str | None, str | None]] | Directory | None = None,
    **options: object,
) -> list[CallRecord]:
    """Every call in ``rows``, oldest end first. ``options`` are ``build_record``'s."""
    agents = as_directory(agents)
    records = [
        build_record(legs, region=region, agents=agents, **options)  # type: ignore[arg-type]
        for legs in group_calls(rows).values()
    ]
    records.sort(key=lambda r: (r.ended_at or datetime.min.replace(tzinfo=UTC), r.call_id))
    return records


# -- incremental reading ------------------------------------------------------------------------

class CdrTail:
    """Follows Master.csv like ``tail -F``: each ``read`` returns the complete lines appended
    since the last one, numbered. ``position`` (inode, offset, line) can be saved and given
    back to resume after a restart.

    cdr_csv opens, appends and closes the file for every row, so a rename (logrotate) is
    seen as a new inode: what is left of the old file is read through the handle kept open,
    then the new file from its start. A file that shrank (``copytruncate``) is re-read from
    its start. An unfinished last line is left for the next ``read``. Blocking I/O."""

    def __init__(self, path: str | os.PathLike[str], *,
                 position: tuple[int, int, int] | None = None) -> None:
        self.path = os.fspath(path)
        self._inode, self._offset, self._line = position or (0, 0, 0)
        self._fh: IO[bytes] | None = None
        self.rotations = 0

    @property
    def position(self) -> tuple[int, int, int]:
        return self._inode, self._offset, self._line

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> list[tuple[int, str]]:
        """New complete lines as ``(line_number, text)``; ``[]`` when the file is missing."""
        out: list[tuple[int, str]] = []
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._fh is not None and (st is None or st.st_ino != self._inode):
            out += self._drain()  # rotated away: finish the old file first
            self.close()
            self._inode, self._offset, self._line = 0, 0, 0
            self.rotations += 1
        if st is None:
            return out
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open across reads on purpose
            fst = os.fstat(self._fh.fileno())
            if fst.st_ino != self._inode:
                if self._inode:
                    self.rotations += 1
                self._inode, self._offset, self._line = fst.st_ino, 0, 0
        if os.fstat(self._fh.fileno()).st_size < self._offset:
            self._offset, self._line = 0, 0  # truncated in place
            self.rotations += 1
        return out + self._drain()

    def _drain(self) -> list[tuple[int, str]]:
        assert self._fh is not None
        self._fh.seek(self._offset)
        data = self._fh.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        out: list[tuple[int, str]] = []
        for raw in data[:end].split(b"\n"):
            self._line += 1
            out.append((self._line, raw.rstrip(b"\r").decode("utf-8", "replace")))
        self._offset += end + 1
        return out
