"""`aftercall replay FILE`: a recorded AMI transcript through the call tracker, offline, and
optionally through the rules."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from agent.ami.replay import replay_tracker, to_json_lines
from agent.commands.exits import Exit
from agent.rules.engine import explain
from agent.rules.loader import load_rules
from agent.rules.tracking import agents_directory, pbx_profile
from agent.sms.numbers import mask


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("replay", help="feed a recorded AMI transcript through the call tracker")
    p.add_argument("file")
    p.add_argument("--rules", default=None, help="rules.yaml for region and agent directory")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    return replay_file(args.file, rules_path=args.rules)


def replay_file(
    file: str, *, rules_path: str | None = None, out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Prints one JSON call record per line; a summary of anything odd goes to stderr. With
    ``rules_path``, each record is followed by what the rules decide for it, as ``# `` lines
    (what would be sent to whom, or why each rule did not fire); the JSON lines stay what
    ``aftercall explain`` takes."""
    out = out or sys.stdout
    err = err or sys.stderr
    rules = load_rules(rules_path, dlt=False) if rules_path else None  # sends nothing
    if rules is not None:
        records, tracker = replay_tracker(file, region=rules.defaults.region,
                                          agents=agents_directory(rules),
                                          pbx=pbx_profile(rules))
    else:
        records, tracker = replay_tracker(file)
    for record, line in zip(records, to_json_lines(records), strict=True):
        print(line, file=out)
        if rules is None:
            continue
        traces = [t for t in explain(rules, record, now=record.ended_at or record.answered_at)
                  if t.matched or not (t.reason or "").startswith("trigger is")]
        for t in traces:
            if t.matched:
                for d in t.decisions:
                    why = f" (suppressed: {d.suppress.value})" if d.suppress else ""
                    print(f"# {record.call_id} {t.rule}: {d.recipient.value} "
                          f"{mask(d.number) if d.number else '-'}: {d.text}{why}", file=out)
            else:
                print(f"# {record.call_id} {t.rule}: not sent: {t.reason}", file=out)
    if tracker.in_progress():
        print(f"{file}: {tracker.in_progress()} call(s) still in progress at the end",
              file=err)
    if tracker.warnings:
        odd = ", ".join(f"{k}={v}" for k, v in sorted(tracker.warnings.items()))
        print(f"{file}: tracker warnings: {odd}", file=err)
    return Exit.OK
