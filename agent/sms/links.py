"""Tracked short links: unguessable codes, short URLs of the length templates reserve, persistence."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from agent.rules.templates import LINK_CODE_LENGTH

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# 62**10 ~ 8e17 codes: guessing a live one by scanning /l/ is hopeless at any request rate.
_CODE = re.compile(rf"[0-9A-Za-z]{{{LINK_CODE_LENGTH}}}")


class LinkStore(Protocol):
    async def add_link(
        self, code: str, url: str, *, message_id: str | None, now: datetime | None = None
    ) -> None: ...


def new_code() -> str:
    """A fresh code from the OS CSPRNG (``secrets``), ``LINK_CODE_LENGTH`` base62 characters."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LINK_CODE_LENGTH))


def is_code(text: str) -> bool:
    """True when ``text`` has the shape of a code (says nothing about whether it exists)."""
    return _CODE.fullmatch(text) is not None


def short_url(public_base: str, code: str) -> str:
    """``{public_base}/l/{code}``: exactly as long as ``templates.reserved_link`` assumed."""
    return f"{public_base.rstrip('/')}/l/{code}"


def _check_url(url: Any) -> str:
    url = str(url)
    if not re.match(r"^https?://\S+$", url):
        raise ValueError(f"link(): {url[:60]!r} is not an http(s) URL")
    return url


class PendingLinks:
    """A synchronous ``link(url) -> str`` for the template engine, which renders without I/O.

    Each call makes a code at once (no I/O needed) and remembers ``(code, url)``; the caller
    persists them with ``persist`` once it knows which message row the text went into. Until
    then the short URL would 404, so persist before the text reaches a gateway. One instance
    per rendering (per call record); the engine may render one text for several recipients,
    so ``persist`` takes the message id the links are counted against (the first row's).
    """

    def __init__(self, public_base: str, *, code: Callable[[], str] = new_code) -> None:
        self.public_base = public_base.rstrip("/")
        self._code = code
        self.pending: list[tuple[str, str]] = []

    def __call__(self, url: str) -> str:
        url = _check_url(url)
        for code, seen in self.pending:  # the same URL twice in one text: one code
            if seen == url:
                return short_url(self.public_base, code)
        code = self._code()
        self.pending.append((code, url))
        return short_url(self.public_base, code)

    async def persist(
        self, store: LinkStore, *, message_id: str | None, now: datetime | None = None
    ) -> int:
        """Write the pending links (then forget them); returns how many were written. Queued
        together, they share the store's one commit."""
        pending, self.pending = self.pending, []
        await asyncio.gather(*(store.add_link(code, url, message_id=message_id, now=now)
                               for code, url in pending))
        return len(pending)


def make_sync_link_factory(public_base: str) -> PendingLinks:
    """A fresh ``PendingLinks`` (the engine's ``link=`` argument) for one rendering."""
    return PendingLinks(public_base)


class LinkShortener:
    """The asynchronous form: shorten one URL and store it in the same call."""

    def __init__(self, store: LinkStore, public_base: str) -> None:
        self._store = store
        self.public_base = public_base.rstrip("/")

    @property
    def url_length(self) -> int:
        return len(self.public_base) + 3 + LINK_CODE_LENGTH

    async def shorten(
        self, url: str, *, message_id: str | None = None, now: datetime | None = None
    ) -> str:
        url = _check_url(url)
        code = new_code()
        await self._store.add_link(code, url, message_id=message_id, now=now)
        return short_url(self.public_base, code)

    def sync_factory(self) -> PendingLinks:
        return PendingLinks(self.public_base)
