"""India DLT refusals are the file's problems wherever it is read to send: check, run and a
reload refuse the same file with the same located problems (explain still diagnoses it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from agent.app import AfterCallAgent
from agent.models import CallRecord, Disposition
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# A 7-letter header: DLT wants 6 letters for transactional and service texts.
BAD_HEADER = ("  sender_id: ACMECO ", "  sender_id: ACMECOX ")


def _bad_copy(tmp_path: Path) -> Path:
    text = (REPO / "rules.yaml").read_text()
    assert BAD_HEADER[0] in text, "rules.yaml changed under the test"
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace(*BAD_HEADER, 1))
    return path


def _aftercall(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "AFTERCALL_AMI_SECRET": "x"})


def test_check_and_run_refuse_the_same_dlt_problem(tmp_path: Path) -> None:
    bad = _bad_copy(tmp_path)
    check = _aftercall("check", str(bad), cwd=tmp_path)
    run = _aftercall("run", "--rules", str(bad), "--db", str(tmp_path / "a.db"), cwd=tmp_path)
    problem = "defaults.sender_id: DLT header 'ACMECOX' for service texts must be 6 letters"
    assert check.returncode == 1 and problem in check.stdout + check.stderr
    assert run.returncode == 1, run.stderr
    assert problem in run.stderr
    assert not (tmp_path / "a.db").exists()  # refused before anything was opened
    # explain judges calls and sends nothing: it still diagnoses the file.
    call = tmp_path / "call.json"
    call.write_text(json.dumps(CallRecord(call_id="1", caller="+919812345001",
                                          disposition=Disposition.MISSED).to_dict()))
    explain = _aftercall("explain", str(call), "--rules", str(bad), cwd=tmp_path)
    assert explain.returncode == 0, explain.stderr
    assert "missed-call-sorry" in explain.stdout


def test_a_reload_with_a_dlt_problem_keeps_the_rules_it_had(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules.yaml", path)
    agent = AfterCallAgent(Settings(ami_secret="x", rules=path, db=tmp_path / "a.db"))
    before = agent.rules
    _bad_copy(tmp_path)  # the same file, now with the 7-letter header
    assert agent.reload_rules() is False
    assert agent.rules is before and agent.stats.reload_errors == 1


def test_a_header_from_the_environment_is_never_quoted(tmp_path: Path) -> None:
    """DLT's header problem names the header; one read from ${ENV} is starred out like any
    other environment value in a problem (found by tests/unit/test_rules_fuzz.py)."""
    import pytest

    from agent.errors import RulesError
    from agent.rules.loader import load_rules

    path = tmp_path / "rules.yaml"
    path.write_text((REPO / "rules.yaml").read_text().replace(
        "  sender_id: ACMECO ", "  sender_id: ${HEADER} ", 1))
    with pytest.raises(RulesError) as exc:
        load_rules(path, env={"HEADER": "Zq9xS3cr"})
    shown = str(exc.value)
    assert "defaults.sender_id: DLT header '***'" in shown and "zq9xs3cr" not in shown.lower()
