"""Ground truth from Asterisk itself: what a call's CDR rows (cdr_csv's Master.csv) say in the
call record's terms, read with as little interpretation as the columns allow. The lab's tests
compare the tracker's records with it, per dialplan style.

The one mapping that is more than reading: a CDR's ANSWERED is party B's answer, and with no
party B it is the PBX's own Answer() (a greeting, a queue's hold). A caller who hangs up there
reached nobody: the record says abandoned, talk time 0, where the row says ANSWERED and a
billsec (``Truth.held_billsec``); see the README's dialplan styles."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from agent.calls.state import extension

#: Each lab style's trunk endpoint (asterisk_conf/pjsip.conf and dialplans/*/pjsip.conf).
TRUNK = {"ours": "trunk", "freepbx": "carrier1", "vanilla": "provider", "carrier": "carrier7"}


@dataclass(frozen=True)
class Truth:
    """What the CDR rows of one call say, in the record's terms."""

    direction: str
    caller: str
    disposition: str
    billsec: int
    rows_summed: int
    agent: str | None
    #: A Queue() row whose party B is the phone: its answer time is the caller's Answer(), so
    #: its billsec includes the time queued, which the CDR does not give on its own.
    queued: bool = False
    #: Where a caller who reached nobody left (the record's tag): ``left_in_queue`` (the
    #: caller's last row is in Queue), ``left_in_ivr`` (ANSWERED with no party B: the PBX's
    #: own Answer(), a greeting or a menu, ended by the caller, not by Hangup()).
    left_in: str | None = None
    #: The billsec of those ANSWERED rows without a party B: time with the PBX, not talk.
    held_billsec: int = 0


def cdr_rows(path: Path) -> dict[str, list[dict[str, str]]]:
    """Master.csv's rows by linkedid, each call's in CDR sequence order."""
    cols = ("accountcode src dst dcontext clid channel dstchannel lastapp lastdata start answer"
            " end duration billsec disposition amaflags uniqueid userfield peeraccount linkedid"
            " sequence").split()
    calls: dict[str, list[dict[str, str]]] = {}
    with path.open() as fh:
        for fields in csv.reader(fh):
            row = dict(zip(cols, fields, strict=True))
            calls.setdefault(row["linkedid"], []).append(row)
    for rows in calls.values():
        rows.sort(key=lambda r: int(r["sequence"]))
    return calls


def truth(trunk: str, dialled: str, rows: list[dict[str, str]]) -> Truth:
    """What one call's CDR rows say. ``trunk``: the trunk endpoint; ``dialled``: the number
    the phone dialled, for calls a phone placed (the CDR's dst is often ``s`` by then)."""
    first = rows[0]

    def ep(ch: str) -> str | None:
        return None if not ch or ch.startswith("Local/") else extension(ch)

    if ep(first["channel"]) == trunk or first["channel"].startswith("Local/"):
        direction = "inbound"
    elif any(ep(r["dstchannel"]) == trunk for r in rows):
        direction = "outbound"
    else:
        direction = "internal"
    # Rows whose party B is a phone (not a Local/ helper, not the trunk): the talk.
    legs = [r for r in rows if ep(r["dstchannel"]) not in (None, trunk)]
    took = [r for r in legs if r["disposition"] == "ANSWERED"]
    if direction == "inbound":
        src = first["src"]
        caller = "anonymous" if src in ("", "anonymous") else src
        agent = ep((took or legs)[-1]["dstchannel"]) if (took or legs) else None
    else:
        caller = dialled
        agent = ep(first["channel"])
        took = [r for r in rows if r["dstchannel"] and r["disposition"] == "ANSWERED"]
    own_last = [r for r in rows if r["uniqueid"] == r["linkedid"]][-1]
    left_in = None
    if took:
        disposition = "answered"
    elif any(r["lastapp"] == "VoiceMail" for r in rows):
        disposition = "voicemail"
    elif own_last["lastapp"] == "Queue":
        disposition, left_in = "abandoned", "left_in_queue"  # still queued when it ended
    elif (not legs and direction == "inbound" and own_last["disposition"] == "ANSWERED"
          and not own_last["dstchannel"] and own_last["lastapp"] != "Hangup"):
        # The PBX answered (ANSWERED, no party B) and the caller's row ended in a greeting
        # or a menu: the caller left before any phone rang.
        disposition, left_in = "abandoned", "left_in_ivr"
    else:
        decided = (legs or rows)[-1]["disposition"]
        disposition = {"BUSY": "busy", "NO ANSWER": "missed"}.get(decided, "failed")
    held = sum(int(r["billsec"]) for r in rows
               if r["disposition"] == "ANSWERED" and not r["dstchannel"]) if left_in else 0
    return Truth(direction, caller, disposition, sum(int(r["billsec"]) for r in took),
                 len(took), agent, any(r["lastapp"] == "Queue" for r in took), left_in, held)
