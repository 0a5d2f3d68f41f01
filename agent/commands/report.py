"""`aftercall report`: delivery, failures, CTR, replies and cost by rule, over a time window."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.commands import storeargs
from agent.commands.exits import Exit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="delivery, failures, CTR, replies, cost by rule")
    storeargs.add_db(p)
    storeargs.add_window(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--price", type=storeargs.price,
                   help="price per SMS segment, for the cost column")
    p.add_argument("--currency", help="currency of --price, e.g. INR")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.reports import build_report, render_report
    from agent.store import make_store

    storeargs.need_db(args.db)
    tz = storeargs.timezone(args)
    since, until = storeargs.span(args, tz)
    async with make_store(args.db) as store:
        rep = await build_report(store, since=since, until=until, rule=args.rule, pbx=args.pbx,
                                 gateway=args.gateway, price_per_segment=args.price,
                                 currency=args.currency, timezone=tz)
    sys.stdout.write(render_report(rep, args.format))
    return Exit.OK
