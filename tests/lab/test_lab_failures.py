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
