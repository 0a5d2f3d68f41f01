"""A command imports only its own module: `aftercall report` or `export` on a big database
starts in a fraction of the time the whole agent (AMI, web, lab, simulator) takes to import,
while `aftercall --help` and a mistyped command still list every command."""

from __future__ import annotations

import json
import subprocess
import sys

from agent.cli import build_parser
from agent.commands import COMMANDS

_PROBE = """
import json, sys
from agent.cli import build_parser
build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
print(json.dumps(sorted(m for m in sys.modules if m.startswith("agent."))))
"""


def _imported(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout))


def test_a_command_imports_its_own_module_and_not_the_others() -> None:
    mods = _imported("--log-level", "debug", "report", "--since", "2025-01-01")
    assert "agent.commands.report" in mods
    others = {f"agent.commands.{m}" for n, m in COMMANDS.items() if n != "report"} - {
        "agent.commands.storeargs"}
    assert not mods & others, sorted(mods & others)
    assert "agent.app" not in mods and "agent.sim" not in mods


def test_the_full_help_still_lists_every_command() -> None:
    text = build_parser().format_help()
    assert all(name in text for name in COMMANDS)
    assert build_parser(["export"]).parse_args(["export"]).command == "export"
