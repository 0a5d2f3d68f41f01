"""`Lab.up()` on a running lab whose repository files changed: the changed dialplan is in
Asterisk when it returns (a reload, not a restart), and the repository's again after."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from agent.lab.lab import Lab

pytestmark = pytest.mark.lab

NO_CONTEXT = "There is no existence"


def test_up_reloads_a_running_lab_whose_dialplan_file_changed(lab: Lab, tmp_path: Path) -> None:
    conf = tmp_path / "asterisk_conf"
    shutil.copytree(lab.conf, conf)
    context = f"aftercall-edited-{secrets.token_hex(3)}"
    with (conf / "extensions.conf").open("a") as fh:
        fh.write(f"\n[{context}]\nexten => 100,1,NoOp(edited)\n")
    edited = Lab(home=lab.home, conf=conf, suite=lab.suite)
    pid = lab.pid()
    try:
        timings = edited.up(dialplan=lab.dialplan())
        assert lab.pid() == pid and timings["start_s"] == 0.0  # reloaded, not restarted
        assert NO_CONTEXT not in lab.cli(f"dialplan show {context}")
        assert edited.stale_files(lab.dialplan()) == []
    finally:
        lab.up()  # the repository's files differ from the installed ones: back to them
    assert NO_CONTEXT in lab.cli(f"dialplan show {context}")
    assert lab.stale_files() == [] and lab.pid() == pid
