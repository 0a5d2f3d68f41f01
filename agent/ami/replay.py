"""A recorded AMI transcript through the call tracker, offline (``aftercall replay``, tests, benches)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from agent.ami.transcript import iter_messages
from agent.calls.pbx import PbxProfile
from agent.calls.tracker import CallTracker
from agent.errors import ConfigError
from agent.models import CallRecord

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
