"""`aftercall prune`: by hand, what retention would do (see README "Retention").

Safe beside a running agent: batches are short write transactions, rows in flight are never
touched.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from agent.commands import storeargs
from agent.commands.exits import Exit
from agent.errors import AftercallError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prune", help="remove message texts, numbers, history and receipts before a date")
    storeargs.add_db(p)
    p.add_argument("--before", type=storeargs.when(False), required=True,
                   help="prune the details of final messages created before this date (UTC)")
    p.add_argument("--rows-before", type=storeargs.when(False),
                   help="also delete whole messages created before this date (they leave "
                   "the reports)")
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p.add_argument("--batch", type=int, default=2000, help="rows per write transaction")
    p.add_argument("--vacuum", action="store_true",
                   help="then rewrite the file (VACUUM; blocks writers while it runs), which "
                   "also enables incremental space reclaim on databases made before it")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent import retention
    from agent.store import is_postgres_url, make_store
    from agent.store.sqlite.retention import vacuum_file

    storeargs.need_db(args.db)
    if is_postgres_url(args.db):
        raise AftercallError("prune works on a SQLite database; this is PostgreSQL")
    details = args.before.at("UTC")
    rows = args.rows_before.at("UTC") if args.rows_before else None
    if rows and rows > details:
        raise AftercallError("--rows-before must not be later than --before")
    async with make_store(args.db) as store:
        before = await store.space()
        if args.dry_run:
            c = await store.count_prunable(details_before=details, rows_before=rows)
            print(f"would prune: details of {c.details} messages, {c.messages} messages,"
                  f" {c.calls} call records (dry run: nothing changed)")
            return Exit.OK
        c = await retention.prune(store, details_before=details, rows_before=rows,
                                  batch=args.batch, pause=0)
        after = await store.space()
    if args.vacuum:
        await asyncio.to_thread(vacuum_file, args.db)
        after["bytes"] = Path(args.db).stat().st_size
    print(f"pruned: details of {c.details} messages, {c.messages} messages, {c.calls} call"
          f" records, {c.other} other rows; database {before['bytes'] / 1e6:.1f} MB ->"
          f" {after['bytes'] / 1e6:.1f} MB")
    return Exit.OK
