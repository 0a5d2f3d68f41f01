"""The lab knows when its installed Asterisk files are no longer the repository's: what
`Lab.up()` reloads (or restarts) a running lab for. A root in a temp dir, no Asterisk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.lab.lab import AGI_DIR, REPO_CONF, RESTART_FILES, Lab


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    conf = tmp_path / "asterisk_conf"
    shutil.copytree(REPO_CONF, conf)
    lab = Lab(home=tmp_path / "home", conf=conf)
    (lab.root / "etc/asterisk").mkdir(parents=True)
    lab.install_conf("ours")
    return lab


def test_freshly_installed_files_are_current(lab: Lab) -> None:
    assert lab.stale_files("ours") == []


def test_another_styles_files_are_not_the_installed_ones(lab: Lab) -> None:
    assert "extensions.conf" in lab.stale_files("freepbx")
    lab.install_conf("freepbx")
    assert lab.stale_files("freepbx") == []
    assert "extensions.conf" in lab.stale_files("ours")


def test_an_edited_dialplan_file_is_stale_until_installed_again(lab: Lab) -> None:
    ext = lab.conf / "extensions.conf"
    ext.write_text(ext.read_text() + "\n[edited]\nexten => 1,1,NoOp()\n")
    assert lab.stale_files("ours") == ["extensions.conf"]
    lab.install_conf("ours")
    assert lab.stale_files("ours") == []


def test_an_edited_agi_script_a_removed_file_and_a_missing_one_are_stale(lab: Lab) -> None:
    script = next(f for f in (lab.conf / "agi-bin").iterdir() if f.is_file())
    script.write_text(script.read_text() + "\n# edited\n")
    (lab.conf / "voicemail.conf").unlink()  # still installed: Asterisk would read it
    (lab.root / "etc/asterisk/queues.conf").unlink()
    assert sorted(lab.stale_files("ours")) == sorted(
        [script.name, "voicemail.conf", "queues.conf"])
    assert (lab.root / AGI_DIR / script.name).exists()


def test_files_asterisk_reads_only_at_start_are_told_apart(lab: Lab) -> None:
    modules = lab.conf / "modules.conf"
    modules.write_text(modules.read_text() + "\n; edited\n")
    assert RESTART_FILES.intersection(lab.stale_files("ours")) == {"modules.conf"}
