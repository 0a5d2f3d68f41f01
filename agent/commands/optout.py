"""`aftercall optout add|remove|list`: the opt-out list (STOP replies land here too)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.commands import storeargs
from agent.commands.exits import Exit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("optout", help="the opt-out list (STOP replies land here)")
    storeargs.add_db(p)
    sub = p.add_subparsers(dest="action", required=True)
    for name in ("add", "remove"):
        storeargs.add_number(sub.add_parser(name))
    sub.add_parser("list")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.store import make_store

    # The list commands create (or migrate) the database: on a fresh install the operator may
    # load the lists before the agent first runs.
    async with make_store(args.db) as store:
        if args.action == "list":
            for e in reversed(await store.list_numbers("optout", limit=10**9)):
                print(f"{e.number}\t{e.at.isoformat()}\t{e.source}")
            return Exit.OK
        number = storeargs.number(args.number, args.region)
        if args.action == "add":
            await store.opt_out(number, source="cli")
            print(f"opted out {number}")
            return Exit.OK
        removed = await store.opt_in(number, source="cli")
        print(f"{'removed' if removed else 'not on the list:'} {number}")
        return Exit.OK if removed else Exit.INPUT
