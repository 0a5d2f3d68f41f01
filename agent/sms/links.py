"""Tracked short links: unguessable codes, short URLs of the length templates reserve, persistence."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from agent.models import ShortLink

LINK_CODE_LENGTH = 10  # characters of a short-link code: /l/XXXXXXXXXX
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
    """A synchronous ``link(url) -> ShortLink`` for the template engine, which renders without
    I/O: each call makes a code at once. The engine puts the links a text holds into its
    Decision (``Decision.links``), and the store writes them in the same transaction as the
    message row, so a short URL resolves before the text can reach a handset. One instance per
    call record: the same URL twice in a record's texts gets one code."""

    def __init__(self, public_base: str, *, code: Callable[[], str] = new_code) -> None:
        self.public_base = public_base.rstrip("/")
        self._code = code
        self._made: dict[str, ShortLink] = {}

    def __call__(self, url: str) -> ShortLink:
        url = _check_url(url)
        link = self._made.get(url)
        if link is None:
            code = self._code()
            link = self._made[url] = ShortLink(short_url(self.public_base, code), code=code,
                                               url=url)
        return link

    @property
    def made(self) -> list[ShortLink]:
        return list(self._made.values())


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
