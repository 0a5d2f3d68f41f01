"""A message's state from its receipts, part by part (pure; both stores use it).

A text sent as several SMPP parts gets one receipt per part. The handset shows the message
only if every part arrived, so it is ``delivered`` only when every part's receipt says so;
one part lost while others arrived is ``partially_delivered``; none arrived is the worst of
the parts' failures. A part's first final receipt is its outcome (a later one for the same
part changes nothing), and the message keeps waiting while any part has none.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.models import MessageState, ReceiptState

RECEIPT_TARGET = {
    ReceiptState.DELIVERED: MessageState.DELIVERED,
    ReceiptState.EXPIRED: MessageState.EXPIRED,
    ReceiptState.UNDELIVERED: MessageState.UNDELIVERED,
    ReceiptState.REJECTED: MessageState.FAILED,
}
FINAL_RECEIPT_STATES = tuple(s.value for s in RECEIPT_TARGET)
_RANK = {MessageState.EXPIRED: 1, MessageState.UNDELIVERED: 2, MessageState.FAILED: 3}


def parts_state(outcomes: Sequence[ReceiptState | None]) -> MessageState | None:
    """The message's state from each part's first final receipt (None: none yet)."""
    if not outcomes or any(o is None or o not in RECEIPT_TARGET for o in outcomes):
        return None
    targets = [RECEIPT_TARGET[o] for o in outcomes if o is not None]
    delivered = sum(t is MessageState.DELIVERED for t in targets)
    if delivered == len(targets):
        return MessageState.DELIVERED
    if delivered:
        return MessageState.PARTIALLY_DELIVERED
    return max(targets, key=lambda t: _RANK[t])


def parts_detail(gateway: str, outcomes: Sequence[ReceiptState | None]) -> str:
    delivered = sum(o is ReceiptState.DELIVERED for o in outcomes)
    return f"{gateway} receipts: {delivered} of {len(outcomes)} parts delivered"
