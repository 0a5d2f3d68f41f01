"""How each AMI event updates the call it belongs to: the ``CallTracker``'s per-event handlers."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from agent.calls.hooks import ATTACH_EVENT, WRAPUP_EVENTS, WrapupCode, clean_code, parse_hook
from agent.calls.pbx import PbxProfile, is_extension
from agent.calls.state import (
    FAR,
    MAX_VALUE,
    ROOT,
    SIDE_FAR,
    SIDE_ROOT,
    Call,
    Chan,
    Event,
    cause,
    extension,
    number,
    text,
)
from agent.models import CallRecord, Trigger
from agent.sms.numbers import classify
from agent.sms.recording import RECORDING_VAR

Handler = Callable[[Event, Chan, float, list[CallRecord]], None]
#: Events about a call that carry no ``Uniqueid`` header of their own.
CallHandler = Callable[[Event, list[CallRecord]], None]
#: Tags of a call that reached voicemail: the caller left a message, or hung up before.
VOICEMAIL_LEFT, VOICEMAIL_HUNG_UP = "voicemail_left", "hung_up_at_greeting"
_intern = sys.intern
#: DialEnd statuses of a leg that refused the call without ringing on.
_REFUSED = frozenset({"BUSY", "CONGESTION", "CHANUNAVAIL"})


def attach_to(call: Call, tags: Iterable[str], variables: Mapping[str, str]) -> None:
    """Tags and variables from a hook (``attach``, ``UserEvent: AftercallAttach``); these win."""
    for tag in tags:
        if isinstance(tag, str):
            call.add_tags(tag[:MAX_VALUE])
    for k, v in variables.items():
        if isinstance(k, str) and isinstance(v, str) and k and v:
            call.set_var(k[:MAX_VALUE], v[:MAX_VALUE], attached=True)


class EventHandlers:
    """Mixin of ``CallTracker``: one ``_on_<event>`` per AMI event it reads. A mixin, not a
    collaborator object, so that ``feed`` dispatches to a bound method with no extra call."""

    # Set by CallTracker.__init__.
    region: str
    pbx: PbxProfile
    _now: float
    _mwi: dict[str, float]
    tag_var: str
    language_var: str
    _chans: dict[str, Chan]

    if TYPE_CHECKING:  # correlation, implemented by CallTracker

        def _merge(self, src: Call, dst: Call, ts: float, out: list[CallRecord]) -> None: ...

        def _complete(self, call: Call, ts: float, out: list[CallRecord]) -> None: ...

        def _record(self, call: Call, trigger: Trigger, ts: float | None = None) -> CallRecord: ...

        def wrapup(self, code: str, *, call_id: str | None = None, agent: str | None = None,
                   channel: str | None = None) -> WrapupCode | bool: ...

    wrapups: list[WrapupCode]
    warnings: Counter[str]

    def _call_event_handlers(self) -> dict[str, CallHandler]:
        return {
            "Cdr": self._on_cdr,
            "AttendedTransfer": self._on_attended_transfer,
            "MessageWaiting": self._on_message_waiting,
        }

    def _event_handlers(self) -> dict[str, Handler]:
        """The AMI events the tracker reads; any other is dropped before it costs anything."""
        return {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "NewAccountCode": self._on_accountcode,
            "Newexten": self._on_newexten,
            "VarSet": self._on_varset,
            "DialBegin": self._on_dialbegin,
            "DialEnd": self._on_dialend,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_nothing,
            "QueueCallerAbandon": self._on_queue_abandon,
            "AgentCalled": self._on_agent_called,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "BridgeEnter": self._on_nothing,
            "BridgeLeave": self._on_nothing,
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_hangup_request,
            "Hangup": self._on_hangup,
            "UserEvent": self._on_userevent,
        }

    # -- per-event updates --------------------------------------------------------------------

    def _root_info(self, call: Call, ev: Event, chan_name: str) -> None:
        num = number(text(ev, "CallerIDNum"))
        if num is not None:
            call.caller_num = num
            call.caller_name = number(text(ev, "CallerIDName"))
        lang = text(ev, "Language")
        if lang:
            call.language = _intern(lang)
        acct = text(ev, "AccountCode")
        if acct:
            call.accountcode = _intern(acct)
        if call.inbound is None:
            ctx = text(ev, "Context")
            if ctx is not None:
                origin = self.pbx.origin(chan_name, ctx, num)
                call.inbound = origin.trunk
                call.origin_how = origin.how
                if call.incomplete is not None and not origin.known:
                    # Joined mid-call, the caller's channel has left its first context
                    # (Goto did-..., ext-queues): its caller id is all that still tells.
                    call.inbound = not is_extension(num)
                    call.origin_how = f"caller id {num or '(none)'} (joined mid-call)"
                exten = text(ev, "Exten")
                call.dialled = exten if exten and exten != "s" else None
                if not call.inbound:
                    call.agent = extension(chan_name)
                    call.agent_alias = num
        # The number the record will name (and a rule may text) is parsed now, while the call
        # is up: ``classify`` keeps its answers, so the hangup finds it parsed (a cold parse
        # is a good part of the tracker's work on the Hangup, on the path to the SMS).
        party = call.caller_num if call.inbound is not False else call.dialled
        if party is not None:
            classify(party, self.region)

    def _chanvars(self, call: Call, items: Iterable[str]) -> None:
        for item in items:
            if item.__class__ is not str:
                continue
            key, eq, value = item.partition("=")
            if eq and value and key:
                self._set_var(call, key, value)

    def _set_var(self, call: Call, key: str, value: str) -> None:
        if len(value) > MAX_VALUE:
            value = value[:MAX_VALUE]
        if key == self.tag_var:
            call.add_tags(value)
        current = call.vars
        if current is None or current.get(key) != value:
            call.set_var(key[:MAX_VALUE], value)

    def _on_nothing(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        pass

    def _on_newchannel(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        if text(ev, "ChannelState") == "6":
            self._on_newstate(ev, ch, ts, out)

    def _on_newstate(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        if text(ev, "ChannelState") == "6" and not ch.up:
            ch.up = True
            if ch.kind == ROOT:
                ch.call.held = True
            elif ch.kind == FAR:
                self._answer(ch.call, ch, ts, number(text(ev, "CallerIDName")), out,
                             alias=text(ev, "CallerIDNum"))

    def _on_newcallerid(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        if ch.kind == ROOT:
            self._root_info(ch.call, ev, ch.name)

    def _on_accountcode(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        acct = text(ev, "AccountCode")
        if ch.kind == ROOT and acct:
            ch.call.accountcode = _intern(acct)

    def _on_newexten(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        if text(ev, "Application") == "VoiceMail":
            ch.call.voicemail = True

    def _on_varset(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        key = (text(ev, "Variable") or "").lstrip("_")
        value = text(ev, "Value")
        call = ch.call
        if not key or not value:
            return
        # MixMonitor's file (a recording link's source) is kept even when not exported.
        if (key in (self.tag_var, self.language_var, RECORDING_VAR)
                or (call.vars and key in call.vars)):
            self._set_var(call, key, value)

    def _on_userevent(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        # The classic AGI script's hook (asterisk_conf/agi-bin/aftercall-attach); other
        # UserEvents belong to other tools.
        if text(ev, "UserEvent") == ATTACH_EVENT:
            _, tags, variables = parse_hook("?" + (text(ev, "Attach") or ""), [])
            attach_to(ch.call, tags, variables)
        else:
            self._on_wrapup_event(ev, ch)

    def _on_wrapup_event(self, ev: Event, ch: Chan | None) -> None:
        """``UserEvent: Wrapup`` with ``Code`` and ``CallID`` (a Linkedid) or ``Agent``."""
        if text(ev, "UserEvent") not in WRAPUP_EVENTS:
            return
        code = clean_code(text(ev, "Code"))
        if code is None:
            self.warnings["wrapup_bad_code"] += 1
            return
        got = self.wrapup(code, call_id=text(ev, "CallID"), agent=text(ev, "Agent"),
                          channel=ch.name if ch is not None else text(ev, "Channel"))
        if got is False:
            self.warnings["wrapup_without_call"] += 1
        elif isinstance(got, WrapupCode):
            self.wrapups.append(got)

    def _on_dialbegin(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        if call.answered is None and call.inbound is not False:
            dest = text(ev, "DestChannel")
            if dest and not dest.startswith("Local/") and not self.pbx.far_is_trunk(dest):
                ext, cid = extension(dest), number(text(ev, "DestCallerIDName"))
                alias = text(ev, "DestCallerIDNum")
                call.rung(ext, None, cid, alias=alias)
                uid = text(ev, "DestUniqueid")
                if uid and ext:
                    if call.ringing is None:
                        call.ringing = {}
                    if len(call.ringing) < 16:
                        call.ringing[uid] = (ext, cid, alias)

    def _on_dialend(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        status = text(ev, "DialStatus")
        if status != "ANSWER":
            if call.answered is None and status:
                call.dial_status = _intern(status[:16])
            ringing = call.ringing
            left = ringing.pop(text(ev, "DestUniqueid") or "", None) if ringing else None
            if (ringing and left is not None and left[0] == call.agent
                    and call.answered is None and status in _REFUSED):
                # A ring group's busy phone refused at once: the agent is the phone that
                # rang on (the one whose CDR row is NO ANSWER), not the last one dialled.
                ext, cid, alias = next(reversed(ringing.values()))
                call.rung(ext, None, cid, alias=alias)
            return
        dest = self._chans.get(text(ev, "DestUniqueid") or "")
        if dest is not None and dest.call is not call:
            self._merge(dest.call, call, ts, out)  # a dialled leg is part of the dialling call
        if dest is not None and dest.kind == FAR:
            self._answer(call, dest, ts, number(text(ev, "DestCallerIDName")), out,
                         alias=text(ev, "DestCallerIDNum"))
        elif call.answered is None:
            self._answer(call, None, ts, None, out)

    def _on_queue_join(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        call.queue_joined = True
        self._queue(call, ev)

    def _on_queue_abandon(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        call.abandoned = True
        self._queue(call, ev)

    def _on_agent_called(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        self._queue(call, ev)
        if call.answered is None:
            member = text(ev, "MemberName")
            iface = text(ev, "Interface") or text(ev, "DestChannel")
            call.rung(extension(iface), _intern(member) if member else None, None,
                      alias=iface)

    def _on_agent_connect(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        self._queue(call, ev)
        member = text(ev, "MemberName")
        ext = extension(text(ev, "Interface"))
        dest = self._chans.get(text(ev, "DestUniqueid") or "")
        if dest is not None and dest.call is call and dest.kind == FAR:
            self._answer(call, dest, ts, number(text(ev, "DestCallerIDName")), out)
        elif call.answered is None:
            self._answer(call, None, ts, None, out)
        if ext:
            call.agent = ext  # the queue member, even when its leg is a Local/ channel
            call.agent_alias = text(ev, "Interface")
        if member:
            call.member_name = _intern(member)

    def _on_agent_complete(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        if not call.end_side:
            reason = text(ev, "Reason")
            if reason == "caller":
                call.end_side = SIDE_ROOT
            elif reason == "agent":
                call.end_side = SIDE_FAR

    def _on_hangup_request(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        ch.call.ending(ch, ts, side=True, soft=ev.get("Event") == "SoftHangupRequest")

    def _on_hangup(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        c = cause(text(ev, "Cause"))
        if ch.kind == ROOT:
            call.hangup_cause = c
            self._root_info(call, ev, ch.name)
        elif c is not None:
            call.last_cause = c
        call.ending(ch, ts, side=False)
        call.live.remove(ch)
        del self._chans[ch.uid]
        if not call.live:
            self._complete(call, ts, out)

    def _on_cdr(self, ev: Event, out: list[CallRecord]) -> None:
        # The ``cdr`` class (in the least-privilege user's read) tells what the dialplan ran
        # without the noisy ``dialplan`` class: a row whose last application is VoiceMail is
        # written as the caller's channel ends, before its Hangup event.
        ch = self._chans.get(text(ev, "UniqueID") or "")
        if ch is None or text(ev, "LastApplication") != "VoiceMail":
            return
        call = ch.call
        call.voicemail = True
        box = (text(ev, "LastData") or "").split(",", 1)[0].strip()
        if box and "@" not in box:
            box += "@default"
        left = box and box in self._mwi and self._mwi[box] >= call.started
        call.add_tags(VOICEMAIL_LEFT if left else VOICEMAIL_HUNG_UP)

    def _on_message_waiting(self, ev: Event, out: list[CallRecord]) -> None:
        # app_voicemail saves the message, then notifies the mailbox (``call`` class), before
        # the caller's channel ends: remembered for the Cdr row that follows.
        box = text(ev, "Mailbox")
        if box and (text(ev, "Waiting") or "0") not in ("0", "no"):
            mwi = self._mwi
            mwi[box] = self._now
            if len(mwi) > 256:
                del mwi[next(iter(mwi))]

    def _on_attended_transfer(self, ev: Event, out: list[CallRecord]) -> None:
        """The agent consulted a colleague (a second call) and joined the caller to them: one
        call from now on, whose agent is the transfer target, with the consult call folded
        in (its own record would be a second, internal, call)."""
        if text(ev, "Result") != "Success":
            return
        chans = self._chans
        transferee = chans.get(text(ev, "TransfereeUniqueid") or "")
        target = chans.get(text(ev, "TransferTargetUniqueid") or "")
        if transferee is None or target is None:
            return
        call = transferee.call
        ts = self._now
        for key in ("OrigTransfererUniqueid", "SecondTransfererUniqueid"):
            t = chans.get(text(ev, key) or "")
            if t is not None and t is not transferee:
                t.call.ending(t, ts, side=False)  # the transferring agent leaves: not a party
                t.ending = True
        if target.call is not call:
            self._merge(target.call, call, ts, out)
        if target.kind == FAR and not target.counted:
            self._answer(call, target, ts, None, out)
        call.resume_talk()
        call.rung(extension(target.name), None, None)

    # -- call state helpers -------------------------------------------------------------------

    @staticmethod
    def _internal(call: Call) -> bool:
        """Phone to phone (a colleague, a transfer's consult call): no one to tell it connected."""
        return call.inbound is False and is_extension(call.dialled)

    def _queue(self, call: Call, ev: Event) -> None:
        queue = text(ev, "Queue")
        if queue:
            call.queue = _intern(queue)

    def _answer(
        self, call: Call, ch: Chan | None, ts: float, cid: str | None, out: list[CallRecord],
        alias: str | None = None,
    ) -> None:
        # A carrier leg (an inbound call forwarded out, say) is a party, not an agent.
        agent_leg = ch is None or not self.pbx.far_is_trunk(ch.name)
        if call.answer(ch, ts, cid, alias, agent_leg=agent_leg) and not self._internal(call):
            out.append(self._record(call, Trigger.CALL_CONNECTED, ts))
