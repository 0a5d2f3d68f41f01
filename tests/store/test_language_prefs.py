"""A number's language choice (reply keyword) on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.store.seams import Store

NOW = datetime(2025, 8, 14, 6, 0, tzinfo=UTC)


async def test_a_number_language_is_kept_and_replaced(store: Store) -> None:
    assert await store.language_preferences() == {}
    await store.set_language("+919812345678", "hi", source="reply:smsc:HINDI", now=NOW)
    await store.set_language("+919812345679", "ta", source="reply:smsc:TAMIL", now=NOW)
    await store.set_language("+919812345678", "en", source="reply:smsc:ENGLISH", now=NOW)
    assert await store.language_preferences() == {"+919812345678": "en", "+919812345679": "ta"}
