"""``aftercall replay FILE``: a recorded AMI transcript through the call tracker, offline."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent.ami.transcript import iter_messages
from agent.calls.pbx import PbxProfile
from agent.calls.tracker import CallTracker
from agent.errors import ConfigError
from agent.models import CallRecord
from agent.sms.numbers import mask

if TYPE_CHECKING:
    from agent.rules.loader import RuleSet

Directory = Mapping[str, tuple[str | None, str | None]]


def replay_tracker(
    path: str | Path,
    *,
    region: str = "IN",
    agents: Directory | None = None,
    inbound_contexts: tuple[str, ...] = (),
    pbx: PbxProfile | None = None,
) -> tuple[list[CallRecord], CallTracker]:
    """Records in the order the tracker produced them, and the tracker (for what is left)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the transcript: {e.strerror or e}") from e
    # A transcript without Timestamp headers (timestampevents off) has no times to replay:
    # its records say so through tracker.warnings["no_timestamp"].
    tracker = CallTracker(agents=agents, region=region, inbound_contexts=inbound_contexts,
                          pbx=pbx)
    records: list[CallRecord] = []
    for message in iter_messages(data):
        records.extend(tracker.feed(message))
    return records, tracker


def replay(
    path: str | Path, *, region: str = "IN", agents: Directory | None = None
) -> list[CallRecord]:
    """Every record (call_connected and call_completed) the transcript produces, in order."""
    return replay_tracker(path, region=region, agents=agents)[0]


def to_json_lines(records: list[CallRecord]) -> list[str]:
    return [json.dumps(r.to_dict(), ensure_ascii=False) for r in records]


def replay_lines(
    path: str | Path, *, region: str = "IN", agents: Directory | None = None
) -> list[str]:
    """The JSON lines ``aftercall replay`` prints: one call record each."""
    return to_json_lines(replay(path, region=region, agents=agents))


def directory_from_rules(rules_path: str | Path) -> tuple[str, dict[str, tuple[str | None, str | None]]]:
    """(region, agents directory) from a rules.yaml (validated: errors name file:line)."""
    from agent.rules.loader import load_rules

    rules = load_rules(rules_path)
    return rules.defaults.region, agents_directory(rules)


def pbx_profile(rules: RuleSet, name: str = "default") -> PbxProfile:
    """rules.yaml's ``pbx:`` section as the tracker and the CDR reader want it."""
    p = rules.config.pbx
    return PbxProfile(name=name, trunks=frozenset(p.trunks), phones=frozenset(p.phones),
                      inbound_contexts=tuple(p.inbound_contexts),
                      internal_contexts=tuple(p.internal_contexts),
                      region=rules.defaults.region)


def agents_directory(rules: RuleSet) -> dict[str, tuple[str | None, str | None]]:
    """rules.yaml's ``agents:`` as the tracker wants it: extension -> (name, mobile)."""
    return {ext: (a.name, a.mobile) for ext, a in rules.config.agents.items()}


def replay_cli(
    file: str, *, rules_path: str | None = None, out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Prints one JSON call record per line; a summary of anything odd goes to stderr. With
    ``rules_path``, each record is followed by what the rules decide for it, as ``# `` lines
    (what would be sent to whom, or why each rule did not fire); the JSON lines stay what
    ``aftercall explain`` takes."""
    from agent.rules.engine import explain
    from agent.rules.loader import load_rules

    out = out or sys.stdout
    err = err or sys.stderr
    rules = load_rules(rules_path) if rules_path else None
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
    return 0
