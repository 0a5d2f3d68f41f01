"""The dispatcher: decisions -> policy -> durable outbox -> gateway submit, retries, receipts.

Layout: ``steps`` (the pure core: ``next_step(row, outcome, now, policy, health)`` -> a frozen
step), ``retry`` (RetryPolicy and pure helpers), ``intake`` (Intake: decisions -> rows),
``sender`` (Sender: one row -> wait, claim, submit, then perform the step), ``dispatcher`` (the
Dispatcher composing them: worker loop, receipts). Import from here; the submodules are an
implementation detail.
"""

from agent.dispatch.dispatcher import Dispatcher
from agent.dispatch.retry import GATEWAY_UNAVAILABLE, Clock, RetryPolicy, mask_number, utcnow

__all__ = ["GATEWAY_UNAVAILABLE", "Clock", "Dispatcher", "RetryPolicy", "mask_number", "utcnow"]
