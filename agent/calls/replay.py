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

if TYPE_CHECKING:
    from agent.rules.loader import RuleSet

Directory = Mapping[str, tuple[str | None, str | None]]


def replay_tracker(
    path: str | Path,
    *,
    region: str = "IN",
    agents: Directory | None = None,
    inbound_contexts: tuple[str, ...] = ("from-trunk",),
) -> tuple[list[CallRecord], CallTracker]:
    """Records in the order the tracker produced them, and the tracker (for what is left)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the transcript: {e.strerror or e}") from e
    tracker = CallTracker(agents=agents, region=region, inbound_contexts=inbound_contexts)
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
    """Prints one JSON call record per line; a summary of anything odd goes to stderr."""
    out = out or sys.stdout
    err = err or sys.stderr
    region, agents = directory_from_rules(rules_path) if rules_path else ("IN", {})
    records, tracker = replay_tracker(file, region=region, agents=agents)
    for line in to_json_lines(records):
        print(line, file=out)
    if tracker.in_progress():
        print(f"{file}: {tracker.in_progress()} call(s) still in progress at the end",
              file=err)
    if tracker.warnings:
        odd = ", ".join(f"{k}={v}" for k, v in sorted(tracker.warnings.items()))
        print(f"{file}: tracker warnings: {odd}", file=err)
    return 0
