"""`aftercall doctor` against the live lab, on each dialplan style and with an over-privileged
AMI user: the exit code and the lines that say why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lab.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
OPS_SECRET = "ops-only-in-the-doctor-test"


def doctor(lab: Lab, tmp_path: Path, *, user: str = "aftercall", secret: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    shutil.copy(REPO / "rules.yaml", tmp_path / "rules.yaml")
    env = {**os.environ, "AFTERCALL_AMI_SECRET": secret or lab.secret(), "SMPP_PASSWORD": "x"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "doctor", "--ami-user", user,
         "--asterisk-etc", str(lab.root / "etc/asterisk"), "--cdr-csv", str(lab.cdr_csv),
         "--rules", str(tmp_path / "rules.yaml"), "--listen", "0.5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def lines(r: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [ln.strip()[len(level):].strip() for ln in r.stdout.splitlines()
            if ln.strip().startswith(level + " ")]


def test_ours_least_privilege_nothing_blocks(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = doctor(lab, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    ok = "\n".join(lines(r, "ok"))
    assert "write classes: reporting only" in ok and "timestampevents = yes" in ok
    assert "channelvars export what the rules read" in ok
    assert "nothing blocks" in r.stdout and lab.secret() not in r.stdout + r.stderr


def test_vanilla_timestamps_off_and_missing_channelvars(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    try:
        lab.up(dialplan="vanilla")
        r = doctor(lab, tmp_path)
    finally:
        lab.up()  # back to the repository's own style
    assert r.returncode == 1, r.stdout + r.stderr
    assert any("timestampevents is off" in ln for ln in lines(r, "note"))
    (fix,) = [ln for ln in lines(r, "FIX") if "channelvars" in ln]
    assert "TICKET" in fix


def test_overprivileged_user_is_named(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf = lab.root / "etc/asterisk/manager.conf"
    original = conf.read_text()
    conf.write_text(original + f"\n[ops]\nsecret = {OPS_SECRET}\ndeny = 0.0.0.0/0.0.0.0\n"
                    "permit = 127.0.0.1/255.255.255.255\nread = call,agent,cdr\n"
                    "write = call,originate,command,reporting\n")
    lab.cli("manager reload")
    try:
        r = doctor(lab, tmp_path, user="ops", secret=OPS_SECRET)
    finally:
        conf.write_text(original)
        lab.cli("manager reload")
    (note,) = [ln for ln in lines(r, "note") if "actions aftercall never uses" in ln]
    assert "originate" in note and "command" in note and "write = reporting" in note
    assert OPS_SECRET not in r.stdout + r.stderr


def test_wrong_secret_is_a_fix(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = doctor(lab, tmp_path, secret="not-it")
    assert r.returncode == 1
    assert any("refused the AMI login" in ln for ln in lines(r, "FIX"))
