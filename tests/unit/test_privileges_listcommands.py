"""Least privilege for the AMI user, from ListCommands answers recorded on the lab."""

from __future__ import annotations

from pathlib import Path

from agent.ami.privileges import describe, excess_write_actions, system_extras

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami_listcommands"


def listcommands(name: str) -> dict[str, object]:
    """The response's headers, as panoramisk hands them over (one per action)."""
    text = (FIXTURES / f"{name}.txt").read_bytes().decode()
    return dict(line.split(": ", 1) for line in text.split("\r\n") if ": " in line)


def test_write_reporting_only_has_nothing_to_spare() -> None:
    resp = listcommands("least_privilege")
    assert "CoreShowChannels" in resp  # what aftercall needs is there
    assert excess_write_actions(resp) == {}


def test_call_originate_command_are_named() -> None:
    excess = excess_write_actions(listcommands("overprivileged"))
    assert {"Originate", "Command", "Hangup", "Redirect", "Setvar"} <= set(excess)
    assert excess["Originate"] == ("originate",) and excess["Command"] == ("command",)
    # Reachable through reporting (what the user should keep) or open to all: not listed.
    assert not {"CoreShowChannels", "Getvar", "Ping", "QueueStatus", "BridgeKick"} & set(excess)
    line = describe("ops", excess)
    assert "'ops'" in line and "Command" in line and "write = reporting" in line
    assert "originate" in line and "command" in line


def test_odd_answers_give_nothing() -> None:
    assert excess_write_actions({"Response": "Error", "Message": "Permission denied (Priv: x)",
                                 "Weird": "no priv here", "Empty": "(Priv: )",
                                 "Many": ["a (Priv: call)"]}) == {}


def test_system_for_pjsip_detection_is_not_excess_but_doctor_says_what_it_permits() -> None:
    # write = reporting,system: what the carrier lab style's user holds to read PJSIP's
    # endpoints. The agent does not warn about it at every login...
    resp = listcommands("system")
    assert "PJSIPShowEndpoints" in resp and excess_write_actions(resp) == {}
    # ...doctor names what else it lets a leaked secret do.
    extras = system_extras(resp)
    assert {"Hangup", "GetConfig", "ModuleLoad", "Reload"} <= set(extras)
    assert not [a for a in extras if a.startswith("PJSIPShow")]
    assert "CoreShowChannels" not in extras  # reporting grants it anyway
    # Without system held, an action system shares with call (Hangup) is still excess.
    assert "Hangup" in excess_write_actions(listcommands("overprivileged"))
    assert system_extras(listcommands("least_privilege")) == []
