"""Fixtures for store and dispatcher tests: a real SQLite file per test and a Decision factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.models import Decision, RecipientKind, Trigger
from agent.store.sqlite import SqliteStore

MakeDecision = Callable[..., Decision]

_BASE = Decision(
    call_id="1700000000.1",
    rule="support-followup",
    trigger=Trigger.CALL_COMPLETED,
    recipient=RecipientKind.CALLER,
    number="+919812345678",
    template="support_ticket",
    gateway="smsc",
    sender_id="ACMECO",
    text="Hi Asha, your ticket #42 is logged.",
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "aftercall.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path) as s:
        yield s


@pytest.fixture
def make_decision() -> MakeDecision:
    def make(**changes: Any) -> Decision:
        changes.setdefault("call_ended_at", datetime.now(UTC))
        return replace(_BASE, **changes)

    return make
