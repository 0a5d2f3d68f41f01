"""rules.yaml ``pbxes:`` (one agent, several AMI links): what `aftercall check` refuses, where,
and how the agent's settings and the section combine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.loop.watch import watched_pbxes
from agent.commands.check import check
from agent.rules.loader import load_rules
from agent.settings import Settings
from devkit.harness import secret_file

REPO_RULES = Path(__file__).parent.parent.parent / "rules.yaml"


@pytest.fixture(autouse=True)
def _smpp_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMPP_PASSWORD", "hunter2")


def _rules(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(REPO_RULES.read_text() + section)
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def test_two_pbxes_load_and_become_two_links(tmp_path: Path) -> None:
    a = secret_file(tmp_path / "blr.secret", "blr-pw")
    b = secret_file(tmp_path / "del.secret", "del-pw")
    path = _rules(tmp_path, f"""\
pbxes:
  - {{name: blr, port: 5038, secret_file: {a}, cdr_csv: /var/log/asterisk/cdr-csv/Master.csv}}
  - {{name: del, host: 10.0.2.5, port: 5039, user: sms, tls: true, secret_file: {b}}}
""")
    text, code = check(path)
    assert code == 0, text
    assert "ami-s3cret" not in text and "blr-pw" not in text
    links = watched_pbxes(Settings(pbx="ignored", ami_port=1), load_rules(path))
    assert [(n, c.host, c.port, c.username, c.secret, c.tls) for n, c, _ in links] == [
        ("blr", "127.0.0.1", 5038, "aftercall", "blr-pw", False),
        ("del", "10.0.2.5", 5039, "sms", "del-pw", True)]
    assert [str(cdr) for _, _, cdr in links] == ["/var/log/asterisk/cdr-csv/Master.csv", "None"]


def test_without_the_section_the_settings_one_pbx_is_watched() -> None:
    settings = Settings(pbx="blr", ami_host="127.0.0.2", ami_port=5040, ami_secret="x",
                        cdr_csv=Path("/tmp/Master.csv"))
    ((name, ami, cdr),) = watched_pbxes(settings, load_rules(REPO_RULES))
    assert (name, ami.host, ami.port, ami.secret, cdr) == ("blr", "127.0.0.2", 5040, "x",
                                                           Path("/tmp/Master.csv"))


def test_check_refuses_each_mistake_at_its_line(tmp_path: Path) -> None:
    ok = secret_file(tmp_path / "ok.secret", "ami-s3cret")
    loose = secret_file(tmp_path / "loose.secret", "ami-s3cret", mode=0o666)
    path = _rules(tmp_path, f"""\
pbxes:
  - name: blr
    secret_file: {ok}
  - name: blr
    secret_file: {ok}
  - name: del
    secret_file: {tmp_path}/missing.secret
  - name: mum
    host: 10.0.3.5
    secret_file: {ok}
  - name: chn
    secret_file: {loose}
  - name: hyd
    secret_file: {ok}
    colour: blue
  - name: "bad name"
    secret_file: {ok}
  - name: pun
""")
    text, code = check(path)
    assert code == 1
    errors = text.splitlines()[:-1]
    assert text.splitlines()[-1] == f"{len(errors)} problems found"
    where = {}
    for e in errors:
        m = re.match(rf"{re.escape(str(path))}:(\d+):\d+: (\S+): (.*)", e)
        assert m, e
        where[m.group(2)] = (int(m.group(1)), m.group(3))

    def line(needle: str) -> int:
        return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)

    first = line("- name: blr")
    assert where["pbxes[1].name"] == (first + 2, f"duplicate PBX name 'blr' (first at line {first})")
    n, msg = where["pbxes[2].secret_file"]
    assert n == line("missing.secret") and "missing.secret: No such file" in msg
    n, msg = where["pbxes[3]"]
    assert n == line("- name: mum") and "plain-text AMI to 10.0.3.5" in msg and "tls: true" in msg
    n, msg = where["pbxes[4].secret_file"]
    assert n == line("loose.secret") and "mode 0666" in msg and "chmod 600" in msg
    assert where["pbxes[5].colour"] == (line("colour: blue"), "unknown key 'colour'")
    n, msg = where["pbxes[6].name"]
    assert n == line("bad name") and msg.startswith("PBX name 'bad name': up to 63 letters")
    assert where["pbxes[7].secret_file"][1] == "missing required key 'secret_file'"
    assert len(errors) == 7, text
