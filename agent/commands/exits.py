"""The one table of exit codes every ``aftercall`` command returns, and the error that maps to each."""

from __future__ import annotations

from enum import IntEnum

from agent.errors import AftercallError, AmiError, LabError, StoreError


class Exit(IntEnum):
    OK = 0
    #: The input is wrong (rules.yaml, a call record, an argument's value), or the command
    #: found something to fix (``doctor``'s FIX lines, a number not on a list).
    INPUT = 1
    #: The command line itself cannot be read (argparse's own code for it).
    USAGE = 2
    #: Cannot connect, authenticate or use a peer: AMI, a gateway, the database.
    CONNECT = 3
    #: The local lab cannot be provisioned or started.
    LAB = 4
    INTERRUPTED = 130


def exit_for(error: AftercallError) -> Exit:
    """The code for an error that ended a command (the exception tree in ``agent.errors``)."""
    if isinstance(error, AmiError | StoreError):
        return Exit.CONNECT
    if isinstance(error, LabError):
        return Exit.LAB
    return Exit.INPUT
