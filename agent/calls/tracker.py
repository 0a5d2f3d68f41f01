"""The call tracker: a pure state machine that correlates AMI events into call records.

Feed it every AMI event (a panoramisk ``Message`` or any ``Mapping[str, str | list[str]]``);
``feed`` returns the records that event produced: ``call_connected`` once when the other party
(the agent, on inbound calls) answers, and ``call_completed`` exactly once when the last channel
of the call hangs up. No I/O, no clock, no logging: the caller logs ``warnings`` and evictions.

How the AMI stream maps onto a call (verified against the lab's Asterisk 22 transcripts):

* Calls are keyed by ``Linkedid``. The channel whose ``Uniqueid`` equals it is the originator
  (the caller, on inbound calls); ``Local/`` halves are helpers and never a party. When a
  channel reports a Linkedid that belongs to another call (Asterisk relinks channels when it
  bridges calls), the two calls are merged and one record comes out, under the older id.
* ``answered_at`` is when a leg other than the originator went Up (``Newstate`` 6, ``DialEnd``
  ANSWER or ``AgentConnect``): the IVR's ``Answer()`` on the caller's own channel is not it.
* ``hangup_by`` is decided by the ``HangupRequest`` (the far end hung up: that side) or
  ``SoftHangupRequest`` (Asterisk itself: ``system``) that ended the conversation: the first one
  on the originator, or the one that took away the last answered leg. A leg that refuses before
  answering (486 Busy) does not count: ``disposition`` says busy. No request seen: ``None``.
* ``talk_seconds`` runs from the answer to that moment; ``wait_seconds`` from the first event
  to the answer (or to the end when nobody answered), IVR included; ``duration_seconds`` from
  the first to the last event of the call.
* ``vars`` holds every non-empty exported channel variable (``ChanVariable`` headers; later
  values win), ``vars["accountcode"]`` the caller's ``CHANNEL(accountcode)`` when set, then
  what ``attach`` added (which wins). ``DestChanVariable`` is not read: every leg reports its
  own variables on its own events. ``VarSet`` events update variables already exported, the tag
  and the language variable only, so internal dialplan variables do not flood the record.
* ``tags`` come from the tag variable (``SMS_TAG``, comma-separated allowed), ``attach`` (the
  FastAGI hook) and ``UserEvent: AftercallAttach`` (the classic AGI script, see calls.hooks);
  ``language`` from the language variable (``SMS_LANG``) or else the caller's channel language.
* ``agent``: on inbound calls, the extension of the leg that answered (last answered, after a
  transfer), or of the last one rung when nobody answered; ``agent_name`` from the directory,
  else the queue's ``MemberName``, else that leg's caller-id name. On outbound and internal calls
  the originator is the agent and ``caller`` is the number dialled (the party to text).
* Records built without a complete history say so in ``vars["aftercall_incomplete"]``:
  ``joined`` (the call was already under way when the tracker first heard of it), ``adopted``
  (taken over by ``resync``) or ``resync`` (ended while the AMI link was down).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from agent.calls.handlers import EventHandlers, Handler, attach_to
from agent.calls.hooks import WRAPUP_VAR, WrapupCode
from agent.calls.pbx import Directory, PbxProfile, as_directory
from agent.calls.recent import RecentKeys
from agent.calls.record import build_record
from agent.calls.state import (
    FAR,
    LOCAL,
    ROOT,
    Call,
    Chan,
    Event,
    duration,
    extension,
    number,
    text,
    timestamp,
    valid_ts,
    values,
)
from agent.models import CallRecord, Trigger

__all__ = ["CallTracker", "Event"]

#: Legs one call may have; more is garbage (or a runaway dialplan) and is not tracked.
MAX_CHANNELS_PER_CALL = 64
_HANGUP_EVENTS = frozenset({"Hangup", "HangupRequest", "SoftHangupRequest"})


class CallTracker(EventHandlers):
    """Turns AMI events into ``CallRecord``s. ``agents`` maps extension, endpoint or interface
    -> (name, mobile) (see ``calls.pbx.Directory``); ``pbx`` says which channels are trunks
    (direction) and names the PBX on every record. ``clock``: the agent's receive time (epoch
    seconds, monotonic-correct), used for events without a ``Timestamp`` header (Asterisk's
    ``timestampevents`` is off by default). Correlation (which call an event belongs to) is
    here; what each event does to its call is in ``calls.handlers``."""

    def __init__(
        self,
        *,
        agents: Mapping[str, tuple[str | None, str | None]] | Directory | None = None,
        region: str = "IN",
        stale_after_s: float = 4 * 3600,
        pbx: PbxProfile | None = None,
        inbound_contexts: Iterable[str] = (),
        tag_var: str = "SMS_TAG",
        language_var: str = "SMS_LANG",
        max_calls: int = 50_000,
        remember_completed: int = 8192,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.agents = agents  # type: ignore[assignment]  # the property makes it a Directory
        self.region = region
        self.stale_after_s = stale_after_s
        pbx = pbx or PbxProfile(region=region)
        extra = tuple(inbound_contexts)
        if extra:
            pbx = replace(pbx, inbound_contexts=pbx.inbound_contexts + extra)
        self.pbx = pbx
        self.clock = clock
        #: Where event times come from: "asterisk" (Timestamp headers), "receive" (the
        #: agent's clock: timestampevents is off) or None before the first call event.
        self.time_source: str | None = None
        self.tag_var = tag_var
        self.language_var = language_var
        self.max_calls = max(1, max_calls)
        self.remember_completed = max(0, remember_completed)
        #: What was odd about the input, by kind (``no_timestamp``, ``late_event``,
        #: ``calls_overflow`` ...). Never raises; the shell logs and resets this as it likes.
        self.warnings: Counter[str] = Counter()
        self._by_lid: dict[str, Call] = {}  # every Linkedid of every call in progress
        self._chans: dict[str, Chan] = {}  # Uniqueid -> live channel
        self._done = RecentKeys(self.remember_completed)  # Linkedids of calls completed lately
        self._count = 0
        self._now = 0.0  # newest event timestamp seen
        self._mwi: dict[str, float] = {}  # mailbox -> when a message was last left in it
        #: Wrap-up codes for calls no longer in progress, for the shell to hand on (take_wrapups).
        self.wrapups: list[WrapupCode] = []
        self._handlers: dict[str, Handler] = self._event_handlers()
        self._call_handlers = self._call_event_handlers()

    @property
    def agents(self) -> Directory:
        return self._agents

    @agents.setter
    def agents(self, value: Mapping[str, tuple[str | None, str | None]] | Directory | None
               ) -> None:
        # A reload hands a plain mapping: keep what already matched (doctor/check read it).
        new = as_directory(value)
        old = getattr(self, "_agents", None)
        if old is not None and new is not old:
            new.matched.update(k for k in old.matched if k in new.entries)
        self._agents = new

    # -- public API ---------------------------------------------------------------------------

    def feed(self, event: Event) -> list[CallRecord]:
        """Apply one AMI event; returns the records it completed (usually none)."""
        out: list[CallRecord] = []
        name = event.get("Event")
        handler = self._handlers.get(name) if name.__class__ is str else None  # type: ignore[arg-type]
        if handler is None:
            other = self._call_handlers.get(name) if name.__class__ is str else None  # type: ignore[arg-type]
            if other is not None:
                try:
                    other(event, out)
                except Exception:  # noqa: BLE001 - as below
                    self.warnings["internal_error"] += 1
            return out
        try:
            touched = self._touch(event, name, out)  # type: ignore[arg-type]
            if touched is not None:
                ch, ts = touched
                handler(event, ch, ts, out)
            elif name == "UserEvent":  # raised by an AMI action (a CRM): no channel
                self._on_wrapup_event(event, None)
        except Exception:  # noqa: BLE001 - last resort: bad input must not stop the AMI reader
            self.warnings["internal_error"] += 1
        return out

    def attach(
        self,
        channel_or_uniqueid_or_linkedid: str,
        *,
        tags: Iterable[str] = (),
        vars: Mapping[str, str] | None = None,
    ) -> bool:
        """Add tags and variables (an AGI hook's CRM ticket, say) to a call in progress.
        Returns False when no call in progress has that channel name, Uniqueid or Linkedid."""
        key = channel_or_uniqueid_or_linkedid
        call = self._by_lid.get(key)
        if call is None:
            ch = self._chans.get(key)
            if ch is None:  # a channel name: rare (AGI knows agi_uniqueid), so a scan is fine
                ch = next((c for c in self._chans.values() if c.name == key), None)
            if ch is None:
                return False
            call = ch.call
        attach_to(call, tags, vars or {})
        return True

    def wrapup(self, code: str, *, call_id: str | None = None, agent: str | None = None,
               channel: str | None = None) -> WrapupCode | bool:
        """An agent's wrap-up code. For a call still in progress (named by ``call_id``, any of
        its Linkedids) it rides on the record: True. For one that has ended: the code to hand
        on, for that call or else for ``agent``'s (or the raising channel's endpoint's) most
        recent call. False: it names no call and no agent."""
        if call_id:
            call = self._by_lid.get(call_id)
            if call is not None:
                attach_to(call, (), {WRAPUP_VAR: code})
                return True
            return WrapupCode(code, call_id=call_id, pbx=self.pbx.name)
        # A feature code the agent dials after the call runs on a channel of its own (a new
        # call): the agent, not that channel's call, says which call it wraps up.
        agent = agent or extension(channel)
        if not agent:
            return False
        return WrapupCode(code, agent=agent, pbx=self.pbx.name)

    def ended(self, call_id: str) -> bool:
        """True when the call (any Linkedid of it) completed here lately (the last
        ``remember_completed`` calls)."""
        return call_id in self._done

    def take_wrapups(self) -> list[WrapupCode]:
        out, self.wrapups = self.wrapups, []
        return out

    def in_progress(self) -> int:
        return self._count

    def __contains__(self, call_id: object) -> bool:
        """True while the call (any Linkedid of it) is in progress here."""
        return call_id in self._by_lid

    def holds(self, uniqueid_or_linkedid: str) -> bool:
        """True while a call in progress here has that Linkedid or a channel with that
        Uniqueid (what ``attach`` finds without a scan)."""
        return uniqueid_or_linkedid in self._by_lid or uniqueid_or_linkedid in self._chans

    def evict_stale(self, now_ts: float) -> list[str]:
        """Forget calls with no event for ``stale_after_s`` (a lost Hangup); returns their ids."""
        limit = now_ts - self.stale_after_s
        stale = [c for k, c in self._by_lid.items() if k == c.call_id and c.last < limit]
        for call in stale:
            self._forget(call)
        return [c.call_id for c in stale]

    def resync(
        self, channels: Iterable[Event], *, now_ts: float | None = None
    ) -> list[CallRecord]:
        """Reconcile with ``CoreShowChannels`` (its ``CoreShowChannel`` events) after a
        reconnect: unknown channels are adopted, and calls whose channels are all gone are
        completed from what was known (marked ``resync``). ``now_ts``: when the list was taken
        (default: the newest event time seen)."""
        now = now_ts if now_ts is not None and valid_ts(now_ts) else self._now
        listed: dict[str, Event] = {}
        for ev in channels:
            uid = text(ev, "Uniqueid")
            if uid is not None:
                listed[uid] = ev
        for uid, ev in listed.items():
            if uid not in self._chans:
                self._adopt(ev, now)
        out: list[CallRecord] = []
        for call in [c for k, c in self._by_lid.items() if k == c.call_id]:
            gone = [ch for ch in call.live if ch.uid not in listed]
            if not gone:
                continue
            for ch in gone:
                call.ending(ch, call.last, side=False)
                call.live.remove(ch)
                self._chans.pop(ch.uid, None)
            if not call.live:
                call.incomplete = call.incomplete or "resync"
                self._complete(call, call.last, out)
        return out

    # -- correlation --------------------------------------------------------------------------

    def _touch(self, ev: Event, name: str, out: list[CallRecord]) -> tuple[Chan, float] | None:
        uid = text(ev, "Uniqueid")
        if uid is None:
            return None
        ts = timestamp(text(ev, "Timestamp"))
        if ts is not None:
            self.time_source = "asterisk"
        elif self.clock is not None:
            ts = self.clock()
            self.time_source = "receive"
        else:
            self.warnings["no_timestamp"] += 1
            ts = self._now
        if ts > self._now:
            self._now = ts
        lid = text(ev, "Linkedid")
        ch = self._chans.get(uid)
        if ch is None:
            ch = self._new_chan(ev, name, uid, lid or uid, ts)
            if ch is None:
                return None
        elif lid is not None and lid != ch.lid:
            self._relink(ch, lid, ts, out)
        call = ch.call
        call.last = max(call.last, ts)
        cv = ev.get("ChanVariable")
        if cv:
            self._chanvars(call, cv if cv.__class__ is list else values(ev, "ChanVariable"))
        return ch, ts

    def _new_chan(self, ev: Event, name: str, uid: str, lid: str, ts: float) -> Chan | None:
        call = self._by_lid.get(lid)
        if call is None:
            if lid in self._done:
                self.warnings["late_event"] += 1
                return None
            if name in _HANGUP_EVENTS:
                # The end of a call we never saw begin: nothing true could be said about it.
                self.warnings["unknown_call"] += 1
                return None
            call = self._new_call(lid, ts)
            if name != "Newchannel" or uid != lid:
                call.incomplete = "joined"
        elif len(call.live) >= MAX_CHANNELS_PER_CALL:
            self.warnings["too_many_channels"] += 1
            return None
        chan_name = text(ev, "Channel") or uid
        if chan_name.startswith("Local/"):
            kind = LOCAL
        else:
            kind = ROOT if uid == call.call_id else FAR
            call.has_party = True
        # The same ids arrive as fresh strings on every event: keep one copy per call.
        if lid == call.call_id:
            lid = call.call_id
        if uid == lid:
            uid = lid
        ch = Chan(uid, lid, chan_name, call, kind)
        call.live.append(ch)
        self._chans[uid] = ch
        call.started = min(call.started, ts)
        if kind == ROOT:
            self._root_info(call, ev, chan_name)
        return ch

    def _new_call(self, lid: str, ts: float) -> Call:
        if self._count >= self.max_calls:
            self.warnings["calls_overflow"] += 1
            self._forget(next(iter(self._by_lid.values())))
        call = Call(lid, ts)
        self._by_lid[lid] = call
        self._count += 1
        return call

    def _relink(self, ch: Chan, lid: str, ts: float, out: list[CallRecord]) -> None:
        ch.lid = lid
        src = ch.call
        dst = self._by_lid.get(lid)
        if dst is None:
            self._by_lid[lid] = src
            src.aliases = (src.aliases or []) + [lid]
        elif dst is not src:
            self._merge(src, dst, ts, out)

    def _merge(self, src: Call, dst: Call, ts: float, out: list[CallRecord]) -> None:
        """Asterisk moved a channel of ``src`` into ``dst``'s Linkedid: one call from now on."""
        for lid in [src.call_id, *(src.aliases or ())]:
            self._by_lid[lid] = dst
        dst.aliases = (dst.aliases or []) + [src.call_id, *(src.aliases or ())]
        self._count -= 1
        moved = dst.absorb(src)
        for c in moved:
            if c.kind == FAR and c.up and not c.counted:
                self._answer(dst, c, ts, None, out)

    def _forget(self, call: Call) -> None:
        for ch in call.live:
            self._chans.pop(ch.uid, None)
        call.live.clear()
        for lid in [call.call_id, *(call.aliases or ())]:
            if self._by_lid.get(lid) is call:
                del self._by_lid[lid]
            self._remember(lid)
        self._count -= 1

    def _remember(self, lid: str) -> None:
        self._done.add(lid)

    def _complete(self, call: Call, ts: float, out: list[CallRecord]) -> None:
        call.ended = max(ts, call.last)
        self._forget(call)
        if call.has_party:
            out.append(self._record(call, Trigger.CALL_COMPLETED))

    def _record(self, call: Call, trigger: Trigger, ts: float | None = None) -> CallRecord:
        return build_record(
            call, trigger, region=self.region, agents=self.agents,
            language_var=self.language_var, ts=ts, pbx=self.pbx.name,
        )

    def _adopt(self, ev: Event, now: float) -> None:
        uid = text(ev, "Uniqueid")
        if uid is None:
            return
        lid = text(ev, "Linkedid") or uid
        age = duration(text(ev, "Duration"))
        start = max(0.0, now - age) if age is not None else now
        known = lid in self._by_lid
        self._done.discard(lid)
        ch = self._new_chan(ev, "CoreShowChannel", uid, lid, start)
        if ch is None:
            return
        call = ch.call
        if not known:
            call.incomplete = "adopted"
            call.connected_sent = True  # too late to tell the agent the call connected
        call.last = max(call.last, now)
        if text(ev, "ChannelState") == "6":
            ch.up = True
            if ch.kind == ROOT:
                call.held = True
            elif ch.kind == FAR:
                self._answer(call, ch, start, number(text(ev, "CallerIDName")), [])
