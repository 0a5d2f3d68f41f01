"""`aftercall dnd add|remove|import`: the do-not-disturb list."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.commands import storeargs
from agent.commands.exits import Exit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dnd", help="the do-not-disturb list")
    storeargs.add_db(p)
    sub = p.add_subparsers(dest="action", required=True)
    for name in ("add", "remove"):
        storeargs.add_number(sub.add_parser(name))
    imp = sub.add_parser("import", help="import a CSV: one number per row, first column")
    imp.add_argument("file")
    storeargs.add_region(imp)
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.store import make_store

    async with make_store(args.db) as store:
        if args.action == "import":
            res = await store.import_dnd_csv(args.file, region=args.region)
            for p in res.problems:
                sys.stderr.write(f"aftercall: {p.rstrip()}\n")
            print(f"imported {res.imported} numbers, skipped {len(res.problems)} rows")
            return Exit.OK
        number = storeargs.number(args.number, args.region)
        if args.action == "add":
            await store.add_dnd([number], source="cli")
            print(f"added {number}")
            return Exit.OK
        removed = await store.remove_dnd(number, source="cli")
        print(f"{'removed' if removed else 'not on the list:'} {number}")
        return Exit.OK if removed else Exit.INPUT
