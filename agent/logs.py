"""structlog set-up: console on a terminal, JSON lines otherwise; phone numbers masked."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from agent.sms.numbers import mask, mask_text

_FREE_TEXT_KEYS = {"text", "detail", "body", "reply"}
_SECRET_KEYS = {"password", "secret", "auth_token", "token", "webhook_secret"}


def mask_number(value: str | None) -> str:
    """``+919876543210`` -> ``+91******3210``: enough to tell numbers apart, not to dial one."""
    return mask(value) if value else ""


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for k in list(event):
        if k in _SECRET_KEYS:
            event[k] = "***"
        elif (k in ("number", "to", "caller", "sender", "recipient_number")
              and isinstance(event[k], str) and "*" not in event[k]):
            event[k] = mask_number(event[k])
        elif k in _FREE_TEXT_KEYS and isinstance(event[k], str):
            # Message texts and details can quote a number (a caller's, an agent's).
            event[k] = mask_text(event[k])
    return event


def setup_logging(level: str = "info", *, json: bool | None = None, unmasked: bool = False) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    lvl = getattr(logging, level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not unmasked:
        processors.append(_redact)
    processors.append(
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
