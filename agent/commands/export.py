"""`aftercall export`: the SMS log, one row per message, as CSV or JSON, streamed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.commands import storeargs
from agent.commands.exits import Exit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="the SMS log, one row per message (CSV or JSON)")
    storeargs.add_db(p)
    storeargs.add_window(p)
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--status", type=storeargs.states,
                   help="comma-separated states, e.g. delivered,failed")
    p.add_argument("--mask", action="store_true", help="mask phone numbers")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.reports import stream_export
    from agent.store import make_store, report_source
    from agent.store.base import MessageFilter

    storeargs.need_db(args.db)
    tz = storeargs.timezone(args)
    since, until = storeargs.span(args, tz)
    f = MessageFilter(states=args.status, rule=args.rule, gateway=args.gateway, pbx=args.pbx,
                      since=since, until=until, limit=None, newest_first=False)
    to_file = bool(args.output and args.output != "-")
    async with make_store(args.db) as store, report_source(store) as reader:
        # Streamed batch by batch: a year of messages never sits in memory at once.
        out = open(args.output, "w", encoding="utf-8") if to_file else sys.stdout  # noqa: SIM115
        try:
            async for text in stream_export(reader, f, args.format, unmasked=not args.mask,
                                            timezone=tz):
                out.write(text)
        finally:
            if to_file:
                out.close()
    return Exit.OK
