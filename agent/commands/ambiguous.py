"""`aftercall ambiguous list|resend|drop`: the operator's verdict on submits whose outcome is
unknown.

An ambiguous submit may or may not be at the SMSC; the agent never guesses. The operator asks
the SMSC (by number, time and any smsc id) and then resends or drops it here; the running agent
picks a resent row up at its next outbox scan. Each verdict is a message event, so the SMS log
shows who decided what.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from agent.commands import storeargs
from agent.commands.exits import Exit


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ambiguous", help="submits whose outcome is unknown: list, resend or drop them")
    storeargs.add_db(p)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="id, created, rule, number, gateway, smsc ids, why")
    for name, what in (("resend", "the SMSC does not have it: queue it again"),
                       ("drop", "do not send it: mark it failed")):
        a = sub.add_parser(name, help=what)
        a.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from agent.dispatch.verdicts import give_verdict
    from agent.models import MessageState
    from agent.store import make_store
    from agent.store.base import MessageFilter

    async with make_store(args.db) as store:
        if args.action == "list":
            rows = await store.list_messages(MessageFilter(
                states=[MessageState.AMBIGUOUS], limit=None, newest_first=False))
            for r in rows:
                print("\t".join([r.id, r.created_at.isoformat(timespec="seconds"), r.rule,
                                 r.number or "-", r.gateway, ",".join(r.smsc_ids) or "-",
                                 r.detail or r.reason or ""]))
            return Exit.OK
        now = datetime.now(UTC)
        missing = []
        for message_id in args.ids:
            row = await give_verdict(store, message_id, args.action,
                                     who="the operator (cli)", now=now)
            if row is None:
                missing.append(message_id)
            else:
                print(f"{args.action}: {message_id} is now {row.state.value}")
        for message_id in missing:
            sys.stderr.write(f"aftercall: {message_id}: no ambiguous message with that id\n")
        return Exit.INPUT if missing else Exit.OK
