"""Every demo call and every agent phone run gets its own SIP identity, even from a SIPp whose
pid repeats (a container).

The bug this guards against: the compose `sipp-caller` runs SIPp in a fresh PID namespace, so
SIPp's pid (and its `[pid]`-, `[branch]`- and default Call-ID-derived identifiers) was the same
on every run. Asterisk's PJSIP keeps a finished transaction for 32 s (UDP): the BYE of a call
placed within that time of the previous one carried the previous BYE's branch and was answered
from that old transaction (200 OK with the old dialog's To tag). SIPp was content, the new
call's channels stayed up in Asterisk, and the agent, rightly, never saw the call end.
The agent phones (UAS) had the same flaw in the To tag they answer with and the branch of the
BYE or REFER they send: a phone restarted in a container starts again from the same pid and
call number 1. Rendering the scenarios the way SIPp fills them in, for two runs with the same
pid, call number and port, shows any identifier that does not change between calls."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from agent.lab import sipp

REPO = Path(__file__).resolve().parents[2]
CALLER_SH = REPO / "docker" / "sipp" / "caller.sh"
AGENTS_SH = REPO / "docker" / "sipp" / "agents.sh"
UAC = sorted(p.name for p in sipp.SCENARIOS.glob("uac_*.xml"))
UAS = sorted(p.name for p in sipp.SCENARIOS.glob("uas_*.xml"))
#: Ports for rendered command lines: nothing is bound in these tests.
SIP_PORT, MEDIA_PORT = 61000, 61004
#: What a container gives SIPp on every run (seen: pid 7 or 8 for `sipp-caller queue_answered`).
PID, CALL_NUMBER, IP = 7, 1, "127.0.0.1"


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _keys(args: list[str]) -> dict[str, str]:
    return {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "-key"}


def _render(scenario: str, args: list[str]) -> list[str]:
    """The scenario's sent messages, with SIPp's keywords filled in as SIPp does for call 1
    of a process with pid ``PID`` started with ``args``."""
    cid = (_option(args, "-cid_str") or "%u-%p@%s")
    cid = cid.replace("%u", str(CALL_NUMBER)).replace("%p", str(PID)).replace("%s", IP)
    keys = _keys(args)
    text = (sipp.SCENARIOS / scenario).read_text()
    sent = re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", text, re.S)
    out = []
    for index, msg in enumerate(sent):
        def fill(m: re.Match[str], index: int = index) -> str:
            word = m.group(1)
            if word == "pid":
                return str(PID)
            if word == "call_number":
                return str(CALL_NUMBER)
            if word == "call_id":
                return cid
            if word == "branch":  # SIPp: z9hG4bK-<pid>-<call number>-<message index>
                return f"z9hG4bK-{PID}-{CALL_NUMBER}-{index}"
            return keys.get(word, m.group(0))

        out.append(re.sub(r"\[([a-z_]+)\]", fill, msg))
    return out


def _identity(messages: list[str]) -> set[str]:
    """Call-IDs, From tags and Via branches of the requests the scenario sends, and the To
    tags of its responses (a UAS's own tag; the rest of a response copies the request)."""
    ids: set[str] = set()
    for msg in messages:
        if msg.lstrip().startswith("SIP/2.0"):
            ids.update(f"to-tag {v}" for v in re.findall(
                r"^\s*(?:To:|\[last_To:\]).*;tag=([^;\s]+)", msg, re.MULTILINE))
            continue
        ids.update(f"call-id {v}" for v in re.findall(r"^\s*Call-ID:\s*(\S+)", msg, re.M))
        ids.update(f"branch {v}" for v in re.findall(r"branch=([^;\s]+)", msg))
        ids.update(f"from-tag {v}" for v in re.findall(r"^\s*From:.*;tag=([^;\s]+)", msg, re.M))
    return ids


def _caller_args(scenario: str) -> list[str]:
    return sipp.caller_args(scenario, "18005550100", sip_port=SIP_PORT, media_port=MEDIA_PORT)


@pytest.mark.parametrize("scenario", UAC)
def test_two_lab_calls_from_the_same_pid_share_no_sip_identifier(scenario: str) -> None:
    first = _identity(_render(scenario, _caller_args(scenario)))
    second = _identity(_render(scenario, _caller_args(scenario)))
    assert {i.split()[0] for i in first} == {"call-id", "branch", "from-tag"}
    assert not first & second, f"{scenario}: the same in two calls: {sorted(first & second)}"


def _caller_sh_args(tmp_path: Path, *scenarios: str) -> list[list[str]]:
    """caller.sh's SIPp command lines, with a stand-in `sipp` that records them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "sipp-args"
    fake = bin_dir / "sipp"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {log}\nprintf "\\n" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "SCENARIOS": str(sipp.SCENARIOS)}
    r = subprocess.run(["bash", str(CALLER_SH), *scenarios], env=env, capture_output=True,
                       text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    return [line.split("\0") for line in log.read_text().split("\0\n") if line]


def test_two_compose_calls_from_the_same_pid_share_no_sip_identifier(tmp_path: Path) -> None:
    # Two `sipp-caller queue_answered` runs: two containers, the same pid in each.
    runs = [_caller_sh_args(tmp_path, "queue_answered") for _ in range(2)]
    first_args, second_args = runs[0][-1], runs[1][-1]
    scenario = Path(_option(first_args, "-sf") or "").name
    assert scenario == "uac_call.xml"
    first = _identity(_render(scenario, first_args))
    second = _identity(_render(scenario, second_args))
    assert {i.split()[0] for i in first} == {"call-id", "branch", "from-tag"}
    assert not first & second, f"the same in two calls: {sorted(first & second)}"


def _phone(scenario: str) -> str:
    (ext, *_) = [ext for ext, (_, name) in sipp.LAB_PHONES.items() if name == scenario]
    return ext


def _sends_requests(scenario: str) -> bool:
    return any(not m.lstrip().startswith("SIP/2.0") for m in _render(scenario, []))


@pytest.mark.parametrize("scenario", UAS)
def test_two_runs_of_a_lab_phone_with_the_same_pid_share_no_sip_identifier(
        scenario: str) -> None:
    ext = _phone(scenario)  # every agent-phone scenario is some lab phone's
    phones = sipp.AgentPhones()
    first = _identity(_render(scenario, phones.args(ext, MEDIA_PORT)))
    second = _identity(_render(scenario, phones.args(ext, MEDIA_PORT)))
    kinds = {i.split()[0] for i in first}
    assert kinds == ({"to-tag", "branch", "from-tag"} if _sends_requests(scenario)
                     else {"to-tag"})
    assert not first & second, f"{scenario}: the same in two runs: {sorted(first & second)}"


def _agents_sh_args(tmp_path: Path) -> dict[str, list[str]]:
    """agents.sh's SIPp command line per SIP port, with a stand-in `sipp` that records it
    and stays up (agents.sh stops every phone as soon as one exits)."""
    run = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    bin_dir = run / "bin"
    bin_dir.mkdir(parents=True)
    log = run / "sipp-args"
    fake = bin_dir / "sipp"
    # one file per phone, written whole then renamed: phones start together, and appends of
    # several printf writes to one shared file could interleave their arguments
    fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {log}.$$.part\n'
                    f"mv {log}.$$.part {log}.$$\nexec sleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "SCENARIOS": str(sipp.SCENARIOS)}
    proc = subprocess.Popen(["bash", str(AGENTS_SH)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)

    def lines() -> list[list[str]]:
        return [f.read_text().rstrip("\0").split("\0")
                for f in run.glob("sipp-args.*") if not f.name.endswith(".part")]

    try:
        deadline = time.monotonic() + 30
        while len(lines()) < len(sipp.PHONES) and proc.poll() is None:
            assert time.monotonic() < deadline, "agents.sh did not start its phones"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    got = lines()
    assert len(got) == len(sipp.PHONES), err
    return {_option(args, "-p") or "": args for args in got}


def test_two_compose_phone_runs_from_the_same_pid_share_no_sip_identifier(
        tmp_path: Path) -> None:
    # Two `sipp-agents` containers (a restart): the same pids and call numbers in each.
    first_run, second_run = _agents_sh_args(tmp_path), _agents_sh_args(tmp_path)
    for sip_port, scenario in sipp.PHONES.values():
        port = str(sip_port)
        assert Path(_option(first_run[port], "-sf") or "").name == scenario
        first = _identity(_render(scenario, first_run[port]))
        second = _identity(_render(scenario, second_run[port]))
        assert "to-tag" in {i.split()[0] for i in first}
        assert not first & second, f"{scenario}: the same in two runs: {sorted(first & second)}"
