"""Fixtures of the AMI tests: fake Asterisks on free ports, stopped when the test ends."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
from fake_ami import FakeAmi, StartPbx


@pytest.fixture
async def fake_pbx() -> AsyncIterator[StartPbx]:
    """``await fake_pbx(secret)``: a fake Asterisk taking that secret, listening on a free port
    (``tls=``: over TLS with that server context; ``host=``: on that loopback address). Each one started is stopped after the
    test, whatever the test did with it."""
    started: list[FakeAmi] = []

    async def start(secret: str, *, tls: ssl.SSLContext | None = None,
                    host: str = "127.0.0.1") -> FakeAmi:
        fake = FakeAmi(secret=secret)
        fake.host = host
        started.append(fake)
        await fake.start(tls=tls)
        return fake

    yield start
    for fake in started:
        await fake.stop()
