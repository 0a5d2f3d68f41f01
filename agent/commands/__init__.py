"""The ``aftercall`` subcommands: one module each, all of one shape.

A command module has ``register(subparsers)``, which adds its parser and sets ``run`` on it,
and ``async def run(args) -> int``, which does the work and returns a code from
``agent.commands.exits``. ``agent.cli`` parses the command line, sets up logging and runs the
chosen ``run`` in its one event loop; an ``AftercallError`` that leaves a command becomes one
line on stderr and the code the exit table gives it.
"""

from __future__ import annotations

from agent.commands import (
    ambiguous,
    calls,
    check,
    dnd,
    doctor,
    explain,
    export,
    lab,
    optout,
    prune,
    replay,
    report,
    run,
    smsc_sim,
    webhooks,
)

#: In the order ``aftercall --help`` lists them.
COMMANDS = (run, check, explain, replay, calls, doctor, lab, smsc_sim,
            report, export, optout, dnd, prune, ambiguous, webhooks)
