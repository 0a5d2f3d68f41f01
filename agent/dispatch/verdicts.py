"""The operator's verdict on an ``ambiguous`` message (CLI and dashboard): resend or drop it.

An ambiguous submit may or may not be at the SMSC; the agent never guesses. After asking the
SMSC, the operator queues it again (the running agent picks it up at its next outbox scan) or
marks it failed. Each verdict is a message event naming who gave it, so the history shows it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from agent.models import MessageState
from agent.store.base import MessageRow
from agent.store.seams import Outbox

Verdict = Literal["resend", "drop"]
RESEND_EXPIRY = timedelta(hours=1)


async def give_verdict(store: Outbox, message_id: str, verdict: Verdict, *, who: str,
                       now: datetime) -> MessageRow | None:
    """The row after the verdict, or None when there is no ambiguous message with that id."""
    if verdict == "resend":
        return await store.transition(
            message_id, MessageState.QUEUED, now=now, reason="operator_resend",
            detail=f"resent by {who}: the SMSC did not have it",
            from_states={MessageState.AMBIGUOUS}, next_attempt_at=now,
            expires_at=now + RESEND_EXPIRY, submitting_since=None)
    return await store.transition(
        message_id, MessageState.FAILED, now=now, reason="operator_dropped",
        detail=f"dropped by {who}", from_states={MessageState.AMBIGUOUS},
        submitting_since=None, next_attempt_at=None)
