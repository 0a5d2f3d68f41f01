"""Building a frozen CallRecord from a call's tracking state: disposition, hangup side, times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from agent.calls.hooks import WRAPUP_VAR
from agent.calls.pbx import Directory, as_directory, cdr_disposition
from agent.calls.state import (
    INCOMPLETE_VAR,
    LEFT_IN_IVR,
    LEFT_IN_QUEUE,
    SIDE_ROOT,
    SIDE_SYSTEM,
    Call,
)
from agent.models import CallRecord, Direction, Disposition, HangupBy, Trigger
from agent.sms.numbers import classify

_DIAL_FAILED = frozenset({"CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE", "INVALIDARGS"})


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _disposition(call: Call) -> tuple[Disposition, str | None]:
    """The call's disposition and, for a caller who left before reaching anyone, where."""
    if call.answered is not None:
        return Disposition.ANSWERED, None
    if call.voicemail:
        return Disposition.VOICEMAIL, None
    caller_left = call.end_side == SIDE_ROOT and not call.end_soft
    if call.abandoned or (call.queue_joined and caller_left):
        return Disposition.ABANDONED, LEFT_IN_QUEUE
    if (caller_left and call.held and call.inbound is not False and call.dial_status is None
            and call.agent is None):
        # The PBX answered (a greeting, an IVR menu) and the caller hung up before any phone
        # rang: the CDR says ANSWERED with a billsec, but no person ever answered.
        return Disposition.ABANDONED, LEFT_IN_IVR
    status = call.dial_status
    if status == "BUSY":
        return Disposition.BUSY, None
    if status in _DIAL_FAILED:
        return Disposition.FAILED, None
    if status in ("NOANSWER", "CANCEL") or call.queue_joined or caller_left:
        return Disposition.MISSED, None
    # No Dial() decided it (the dialplan rang and timed out, or hung up with a cause): the
    # hangup cause, mapped as Asterisk's CDR maps it (cause 19 is NO ANSWER, 17 BUSY ...).
    cause = call.hangup_cause if call.hangup_cause is not None else call.last_cause
    cdr = cdr_disposition(cause)
    if cdr == "BUSY":
        return Disposition.BUSY, None
    if cdr == "NO ANSWER":
        return Disposition.MISSED, None
    return Disposition.FAILED, None


def _hangup_by(call: Call, direction: Direction) -> HangupBy | None:
    if not call.end_side:
        return None
    if call.end_soft or call.end_side == SIDE_SYSTEM:
        return HangupBy.SYSTEM
    root_is_caller = direction is not Direction.OUTBOUND
    if (call.end_side == SIDE_ROOT) == root_is_caller:
        return HangupBy.CALLER
    return HangupBy.AGENT


def build_record(
    call: Call,
    trigger: Trigger,
    *,
    region: str,
    agents: Mapping[str, tuple[str | None, str | None]] | Directory,
    language_var: str,
    ts: float | None = None,
    pbx: str = "default",
) -> CallRecord:
    """A frozen snapshot of ``call``. ``ts`` is "now" for a call_connected record."""
    raw_caller = call.caller_num
    dialled = call.dialled
    agent = call.agent
    agent_name_fallback = call.member_name or call.agent_cid_name
    if call.inbound is not False:
        direction = Direction.INBOUND
        did = dialled
        info = classify(raw_caller, region)
        withheld = info.kind == "anonymous"
    else:
        # Outbound and internal calls start at an agent's phone: the party worth texting
        # (``caller`` in rules and templates) is the number the agent dialled.
        dial_info = classify(dialled, region)
        direction = Direction.INTERNAL if dial_info.kind == "short_code" else Direction.OUTBOUND
        did = None
        agent_name_fallback = call.caller_name
        raw_caller, info, withheld = dialled, dial_info, False
    caller = "anonymous" if withheld else (info.e164 or raw_caller or "")
    name, mobile = None, None
    if agent:
        hit = as_directory(agents).lookup(agent, call.agent_alias)
        if hit is not None:
            name, mobile = hit[1]

    vars_: dict[str, str] = dict(call.vars) if call.vars else {}
    if call.accountcode and "accountcode" not in vars_:
        vars_["accountcode"] = call.accountcode
    if call.attached_vars:
        vars_.update(call.attached_vars)
    if call.incomplete:
        vars_[INCOMPLETE_VAR] = call.incomplete
    wrapup = vars_.pop(WRAPUP_VAR, None)  # a code given while the call was still up
    language = vars_.get(language_var) or call.language

    completed = trigger is Trigger.CALL_COMPLETED
    end = call.ended if completed else ts
    if end is None:
        end = call.last
    answered = call.answered
    talk = 0.0
    if answered is not None:
        talk_end = call.talk_end if (completed and call.talk_end is not None) else end
        talk = max(0.0, talk_end - answered)
    wait_end = answered if answered is not None else end
    tags = tuple(call.tags) if call.tags else ()
    disposition, left_in = _disposition(call) if completed else (Disposition.ANSWERED, None)
    if left_in is not None and left_in not in tags:
        tags += (left_in,)
    return CallRecord(
        call_id=call.call_id,
        trigger=trigger,
        caller=caller,
        caller_name=None if withheld else call.caller_name,
        did=did,
        direction=direction,
        queue=call.queue,
        agent=agent,
        agent_name=name or agent_name_fallback,
        agent_number=mobile,
        disposition=disposition,
        started_at=_dt(call.started),
        answered_at=_dt(answered),
        ended_at=_dt(end) if completed else None,
        wait_seconds=round(max(0.0, wait_end - call.started), 3),
        talk_seconds=round(talk, 3),
        duration_seconds=round(max(0.0, end - call.started), 3),
        hangup_cause=call.hangup_cause if call.hangup_cause is not None else call.last_cause,
        hangup_by=_hangup_by(call, direction) if completed else None,
        tags=tags,
        vars=vars_,
        language=language,
        pbx=pbx,
        direction_by=call.origin_how,
        wrapup=wrapup if completed else None,
    )
