"""Tracked links: code shape and entropy source, URL length as the rules reserve it, persistence."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rules.templates import reserved_link
from agent.sms.links import (
    ALPHABET,
    LinkShortener,
    is_code,
    make_sync_link_factory,
    new_code,
)
from agent.store.sqlite import SqliteStore


def test_codes_are_base62_of_the_reserved_length_and_distinct() -> None:
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == 10 and set(c) <= set(ALPHABET) and is_code(c) for c in codes)


@settings(max_examples=200)
@given(base=st.from_regex(r"https?://[a-z0-9.-]{1,30}(/[a-z0-9]{1,10})?", fullmatch=True),
       url=st.from_regex(r"https://[a-z]{1,20}\.in/t/[0-9]{1,8}", fullmatch=True))
def test_short_url_is_exactly_as_long_as_the_template_budget(base: str, url: str) -> None:
    f = make_sync_link_factory(base)
    assert len(f(url)) == len(reserved_link(base)(url)) == len(base.rstrip("/")) + 3 + 10


def test_sync_factory_reuses_a_code_for_the_same_url_and_refuses_non_http() -> None:
    f = make_sync_link_factory("https://acme.in/")
    a, b, c = f("https://x.in/1"), f("https://x.in/1"), f("https://x.in/2")
    assert a == b != c and a.startswith("https://acme.in/l/")
    assert [(s.url, s.code) for s in f.made] == [("https://x.in/1", a.code), ("https://x.in/2", c.code)]
    assert a == f"https://acme.in/l/{a.code}"
    import pytest

    with pytest.raises(ValueError, match="not an http"):
        f("javascript:alert(1)")


async def test_shortened_links_resolve(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "a.db") as store:
        s = LinkShortener(store, "https://acme.in")
        # not yet attributed to a message (tests/store/test_sqlite.py: one that is)
        short2 = await s.shorten("https://help.acme.in/t/43")
        assert len(short2) == s.url_length
        row2 = await store.resolve_link(short2.rsplit("/", 1)[1])
        assert row2 is not None and row2.message_id is None
        assert row2.url == "https://help.acme.in/t/43"
