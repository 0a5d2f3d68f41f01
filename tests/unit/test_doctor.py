"""`aftercall doctor`'s judgements from configuration files and CDR rows (the lab's own, per
dialplan style); tests/lab/test_doctor_live.py runs it against the live lab."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.calls.pbx import Directory, PbxProfile
from agent.commands.doctor import _cdr, _channelvars, _conf, _read_classes, _timestamps, report, rules_vars
from devkit.harness import rules_with
from agent.rules.loader import load_rules
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "asterisk_conf"
CDR = REPO / "tests/fixtures/cdr"


def etc(tmp_path: Path, style: str) -> Path:
    d = tmp_path / style
    d.mkdir()
    for f in CONF.glob("*.conf"):
        shutil.copy(f, d / f.name)
    if style != "ours":
        for f in (CONF / "dialplans" / style).glob("*.conf"):
            shutil.copy(f, d / f.name)
    return d


def levels(findings) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.level for f in findings]


def test_least_privilege_user_of_the_sample_manager_conf_is_enough(tmp_path: Path) -> None:
    manager = _conf(etc(tmp_path, "ours") / "manager.conf")
    assert levels(_read_classes(manager, "aftercall")) == ["ok"]
    assert levels(_timestamps(manager, [])) == ["ok"]


def test_a_user_without_the_call_class_is_a_fix(tmp_path: Path) -> None:
    d = etc(tmp_path, "ours")
    text = (d / "manager.conf").read_text().replace("read = call,agent,cdr,user,reporting",
                                                   "read = cdr,reporting")
    (d / "manager.conf").write_text(text)
    found = _read_classes(_conf(d / "manager.conf"), "aftercall")
    assert "FIX" in levels(found) and any("'call'" in f.text for f in found)


def test_vanilla_timestamps_off_is_a_note_and_missing_channelvars_a_fix(tmp_path: Path) -> None:
    manager = _conf(etc(tmp_path, "vanilla") / "manager.conf")
    (ts,) = _timestamps(manager, [])
    assert ts.level == "note" and "receive times" in ts.text
    rules = load_rules(rules_with(tmp_path))
    used = rules_vars(rules)
    assert {"TICKET", "SMS_TAG"} <= used
    (cv,) = _channelvars(manager, used, [])
    assert cv.level == "FIX" and "TICKET" in cv.text
    assert report([ts, cv])[1] == 1


def test_cdr_calls_are_classified_and_unmatched_agents_named(tmp_path: Path) -> None:
    rules = load_rules(rules_with(tmp_path))
    settings = Settings(cdr_csv=CDR / "vanilla" / "Master.csv")
    directory = Directory({"2001": ("Alice", "+919812345678"), "2077": ("Nobody", None)})
    found = _cdr(settings.cdr_csv, etc(tmp_path, "vanilla"), rules, PbxProfile(), directory,
                 last=3)
    text = "\n".join(str(f) for f in found)
    assert "trunk provider: caller id mobile" in text
    assert "phone alice: caller id 2001 is an extension" in text
    assert "'2077' matches no endpoint" in text and "'2001'" not in text
    calls = [f.text for f in found if f.text.startswith("call ")]
    assert len(calls) == 3
    assert report(found)[1] == 0
