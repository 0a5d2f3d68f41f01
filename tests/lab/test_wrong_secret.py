"""A wrong AMI secret against the lab's Asterisk: `aftercall run` and `aftercall calls` say so
in one line and exit 3 promptly (run used to print the line and never exit; calls printed a
traceback)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aftercall(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "AFTERCALL_AMI_SECRET": "not-the-secret", "SMPP_PASSWORD": "x",
           "KANNEL_USER": "x", "KANNEL_PASSWORD": "x", "AFTERCALL_LOG_JSON": "1"}
    shutil.copy(REPO / "rules.yaml", tmp_path / "rules.yaml")
    t0 = time.monotonic()
    # The timeout is the regression's guard: before the fix `run` never exited.
    r = subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    return r, time.monotonic() - t0


def test_run_with_a_wrong_secret_exits_3_promptly(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r, took = aftercall(tmp_path, "run", "--db", str(tmp_path / "a.db"),
                        "--http", f"127.0.0.1:{free_port()}", "--agi-port", str(free_port()))
    assert r.returncode == 3, r.stderr[-2000:]
    assert took < 20
    plain = [ln for ln in r.stderr.splitlines() if not ln.startswith("{")]
    assert plain == [ln for ln in plain if ln.startswith("aftercall: Asterisk refused the AMI login")]
    assert len(plain) == 1 and "not-the-secret" not in r.stderr + r.stdout


def test_calls_with_a_wrong_secret_is_one_line_and_exit_3(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r, took = aftercall(tmp_path, "calls")
    assert r.returncode == 3, r.stderr[-2000:]
    assert took < 20
    assert "Traceback" not in r.stderr
    plain = [ln for ln in r.stderr.splitlines() if not ln.startswith("{")]
    assert len(plain) == 1 and plain[0].startswith("aftercall: Asterisk refused the AMI login")
