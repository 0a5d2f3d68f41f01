"""Ground truth from Asterisk itself: what a call's CDR rows (cdr_csv's Master.csv) say in the
call record's terms, read with as little interpretation as the columns allow. The lab's tests
compare the tracker's records with it, per dialplan style."""

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
    if took:
        disposition = "answered"
    elif any(r["lastapp"] == "VoiceMail" for r in rows):
        disposition = "voicemail"
    elif [r for r in rows if r["uniqueid"] == r["linkedid"]][-1]["lastapp"] == "Queue":
        disposition = "abandoned"  # the caller's last row: still in the queue when it ended
    else:
        decided = (legs or rows)[-1]["disposition"]
        disposition = {"BUSY": "busy", "NO ANSWER": "missed"}.get(decided, "failed")
    return Truth(direction, caller, disposition, sum(int(r["billsec"]) for r in took),
                 len(took), agent, any(r["lastapp"] == "Queue" for r in took))
