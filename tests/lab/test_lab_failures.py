"""A lab that cannot start says why, quickly."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from agent.errors import LabError
from agent.lab.lab import Lab

pytestmark = pytest.mark.lab


def test_port_taken_is_named(lab, tmp_path: Path):
    # A second lab on the same machine finds AMI's port held by the first one.
    other = Lab(home=tmp_path / "other")
    other.root.mkdir(parents=True)
    (other.root / "usr/sbin").mkdir(parents=True)
    (other.root / "usr/sbin/asterisk").touch()
    (other.root / "usr/bin").mkdir(parents=True)
    (other.root / "usr/bin/python3").touch()
    (other.root / ".aftercall-ok").touch()
    with pytest.raises(LabError, match="port 5038/tcp .* already in use"):
        other.up()


def test_debootstrap_failure_is_reported(tmp_path: Path, monkeypatch):
    broken = Lab(home=tmp_path / "broken", suite="no-such-suite")
    with pytest.raises(LabError, match="debootstrap of Debian no-such-suite failed"):
        broken.provision(log=lambda *_: None)


def test_config_error_is_reported(lab, tmp_path: Path):
    # The same cached root, our config with one broken file: Asterisk starts, the lab refuses.
    conf = tmp_path / "conf"
    shutil.copytree(lab.conf, conf)
    (conf / "pjsip.conf").write_text((conf / "pjsip.conf").read_text()
                                     + "\n[broken]\ntype = endpoint\nno_such_option = 1\n")
    lab.down()
    broken = Lab(home=lab.home, conf=conf)
    try:
        with pytest.raises(LabError, match="configuration errors"):
            broken.up()
        assert not broken.running()
    finally:
        lab.up()
    with socket.create_connection(("127.0.0.1", 5038), timeout=2) as s:
        assert s.recv(30).startswith(b"Asterisk Call Manager")


def test_a_phone_whose_media_port_is_taken_is_named_at_start() -> None:
    # Another program binds a port of a phone's block after the block was handed out, before
    # that phone's SIPp binds it (the allocator keeps the lab's own SIPps apart).
    from agent.lab import ports, sipp

    phones = sipp.AgentPhones()
    with ports.PORTS.block() as block, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", block + 2))  # the phone's video RTP port
        phones._media["2009"] = block  # what start() would have reserved for it
        try:
            with pytest.raises(LabError, match=r"2009: .*Unable to bind video RTP socket"):
                phones.__enter__()
        finally:
            phones.stop()
