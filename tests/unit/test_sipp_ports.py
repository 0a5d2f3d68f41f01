"""SIPp's media ports: -mp P takes P..P+3, so the lab picks a block that is wholly free."""

from __future__ import annotations

import socket

import pytest

from agent.lab import sipp


def test_a_media_port_block_with_any_port_taken_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sipp, "MEDIA_PORTS", range(61000, 61008, 4))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        try:
            held.bind(("127.0.0.1", 61002))  # the first block's video port
        except OSError:
            pytest.fail("port 61002 is in use on this machine; the test needs it free")
        for _ in range(20):  # whichever block the random start lands on
            assert sipp.free_media_port() == 61004


def test_no_free_block_is_a_clear_lab_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sipp, "MEDIA_PORTS", range(61000, 61004, 4))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 61003))
        with pytest.raises(sipp.LabError, match="61000-61003"):
            sipp.free_media_port()
