"""The dispatcher: decisions -> policy -> durable outbox -> gateway submit, retries, receipts.

Layout: ``retry`` (RetryPolicy and pure helpers), ``intake`` (decisions -> rows), ``sender``
(one message: claim, submit, retry, finish), ``dispatcher`` (the Dispatcher class: state,
worker loop, receipts). Import from here; the submodules are an implementation detail.
"""

from agent.dispatch.dispatcher import Dispatcher
from agent.dispatch.retry import GATEWAY_UNAVAILABLE, Clock, RetryPolicy, mask_number, utcnow

__all__ = ["GATEWAY_UNAVAILABLE", "Clock", "Dispatcher", "RetryPolicy", "mask_number", "utcnow"]
