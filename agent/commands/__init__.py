"""The ``aftercall`` subcommands: one module each, all of one shape.

A command module has ``register(subparsers)``, which adds its parser and sets ``run`` on it,
and ``async def run(args) -> int``, which does the work and returns a code from
``agent.commands.exits``. ``agent.cli`` parses the command line, sets up logging and runs the
chosen ``run`` in its one event loop; an ``AftercallError`` that leaves a command becomes one
line on stderr and the code the exit table gives it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Command name -> its module, in the order ``aftercall --help`` lists them. A command's module
#: is imported only when it runs (or for the full help): ``aftercall report`` doesn't pay for
#: the agent, the lab and the simulator.
COMMANDS: dict[str, str] = {
    "run": "run", "check": "check", "explain": "explain", "replay": "replay", "calls": "calls",
    "doctor": "doctor", "lab": "lab", "smsc-sim": "smsc_sim", "report": "report",
    "export": "export", "optout": "optout", "dnd": "dnd", "prune": "prune",
    "ambiguous": "ambiguous", "webhooks": "webhooks",
}


def module(name: str) -> ModuleType:
    return importlib.import_module(f"agent.commands.{COMMANDS[name]}")
