"""The record loop: each watched PBX (watch) feeds finished calls -> rules -> outbox (pipeline);
CDR recovery, replies."""

from agent.loop.pipeline import RecordPipeline
from agent.loop.recovery import Recovery
from agent.loop.replies import ReplyHandler

__all__ = ["RecordPipeline", "Recovery", "ReplyHandler"]
