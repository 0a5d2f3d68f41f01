"""How each AMI event updates the call it belongs to: the ``CallTracker``'s per-event handlers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from agent.calls.hooks import ATTACH_EVENT, parse_hook
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

Handler = Callable[[Event, Chan, float, list[CallRecord]], None]
_intern = sys.intern


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
    inbound_contexts: frozenset[str]
    tag_var: str
    language_var: str
    _chans: dict[str, Chan]

    if TYPE_CHECKING:  # correlation, implemented by CallTracker

        def _merge(self, src: Call, dst: Call, ts: float, out: list[CallRecord]) -> None: ...

        def _complete(self, call: Call, ts: float, out: list[CallRecord]) -> None: ...

        def _record(self, call: Call, trigger: Trigger, ts: float | None = None) -> CallRecord: ...

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
                call.inbound = ctx in self.inbound_contexts
                if not call.inbound and call.incomplete is not None:
                    # Joined mid-call, the caller's channel has left the inbound context
                    # (Goto did-...): a caller that is not an extension is taken as inbound.
                    call.inbound = classify(num, self.region).kind != "short_code"
                exten = text(ev, "Exten")
                call.dialled = exten if exten and exten != "s" else None
                if not call.inbound:
                    call.agent = extension(chan_name)

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
            if ch.kind == FAR:
                self._answer(ch.call, ch, ts, number(text(ev, "CallerIDName")), out)

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
        if key in (self.tag_var, self.language_var) or (call.vars and key in call.vars):
            self._set_var(call, key, value)

    def _on_userevent(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        # The classic AGI script's hook (asterisk_conf/agi-bin/aftercall-attach); other
        # UserEvents belong to other tools.
        if text(ev, "UserEvent") == ATTACH_EVENT:
            _, tags, variables = parse_hook("?" + (text(ev, "Attach") or ""), [])
            attach_to(ch.call, tags, variables)

    def _on_dialbegin(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        if call.answered is None and call.inbound is not False:
            dest = text(ev, "DestChannel")
            if dest and not dest.startswith("Local/"):
                call.rung(extension(dest), None, number(text(ev, "DestCallerIDName")))

    def _on_dialend(self, ev: Event, ch: Chan, ts: float, out: list[CallRecord]) -> None:
        call = ch.call
        status = text(ev, "DialStatus")
        if status != "ANSWER":
            if call.answered is None and status:
                call.dial_status = _intern(status[:16])
            return
        dest = self._chans.get(text(ev, "DestUniqueid") or "")
        if dest is not None and dest.call is not call:
            self._merge(dest.call, call, ts, out)  # a dialled leg is part of the dialling call
        if dest is not None and dest.kind == FAR:
            self._answer(call, dest, ts, number(text(ev, "DestCallerIDName")), out)
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
            call.rung(extension(text(ev, "Interface") or text(ev, "DestChannel")),
                       _intern(member) if member else None, None)

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

    # -- call state helpers -------------------------------------------------------------------

    def _queue(self, call: Call, ev: Event) -> None:
        queue = text(ev, "Queue")
        if queue:
            call.queue = _intern(queue)

    def _answer(
        self, call: Call, ch: Chan | None, ts: float, cid: str | None, out: list[CallRecord]
    ) -> None:
        if call.answer(ch, ts, cid):
            out.append(self._record(call, Trigger.CALL_CONNECTED, ts))
