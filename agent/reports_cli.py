"""CLI subcommands over the store: ``report``, ``export``, ``optout`` and ``dnd`` lists, and the
operator's verdict on ``ambiguous`` messages."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agent.errors import AftercallError, StoreError
from agent.models import MessageState
from agent.reports import (
    ReportReader,
    build_report,
    export_messages,
    parse_states,
    parse_when,
    render_report,
)
from agent.sms.numbers import classify
from agent.store.base import MessageFilter
from agent.store import is_postgres_url, make_store

Handler = Callable[[argparse.Namespace], int]


def _default_db() -> str:
    return os.environ.get("AFTERCALL_DB", "./aftercall.db")


def _when(end: bool) -> Callable[[str], datetime]:
    def parse(v: str) -> datetime:
        try:
            return parse_when(v, end=end)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{v!r}: {exc}") from None

    return parse


def _states(v: str) -> list[MessageState]:
    try:
        return parse_states(v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{v!r}: {exc}") from None


def _decimal(v: str) -> Decimal:
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{v!r}: expected a price such as 0.12") from None
    if d < 0:
        raise argparse.ArgumentTypeError(f"{v!r}: a price cannot be negative")
    return d


def _run(fn: Callable[[], Awaitable[int]]) -> int:
    try:
        return asyncio.run(fn())
    except StoreError as exc:  # the database cannot be reached or used: exit code 3, like run
        print(f"aftercall: {exc}", file=sys.stderr)
        return 3
    except AftercallError as exc:
        print(f"aftercall: {exc}", file=sys.stderr)
        return 1


def _number(raw: str, region: str) -> str:
    info = classify(raw, region)
    if info.e164 is None:
        raise AftercallError(f"{raw!r}: not a phone number ({info.detail or info.kind})")
    return info.e164


def _need_db(path: str) -> None:
    if not is_postgres_url(path) and not Path(path).exists():
        raise AftercallError(f"{path}: no such database (set --db or AFTERCALL_DB)")


# -- handlers ------------------------------------------------------------------------------------


def report(args: argparse.Namespace) -> int:
    async def go() -> int:
        _need_db(args.db)
        async with make_store(args.db) as store:
            rep = await build_report(store, since=args.since, until=args.until, rule=args.rule,
                                     gateway=args.gateway, price_per_segment=args.price,
                                     currency=args.currency)
        sys.stdout.write(render_report(rep, args.format))
        return 0

    return _run(go)


def export(args: argparse.Namespace) -> int:
    async def go() -> int:
        _need_db(args.db)
        f = MessageFilter(states=args.status, rule=args.rule, gateway=args.gateway, since=args.since,
                          until=args.until, limit=None, newest_first=False)
        async with make_store(args.db) as store:
            text = await export_messages(store, f, args.format, unmasked=not args.mask)
        if args.output and args.output != "-":
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0

    return _run(go)


def optout(args: argparse.Namespace) -> int:
    async def go() -> int:
        _need_db(args.db)
        async with make_store(args.db) as store:
            if args.action == "list":
                async with ReportReader.for_store(store) as reader:
                    for r in await reader.rows("SELECT number, at, source FROM opt_outs"
                                               " ORDER BY at"):
                        print(f"{r['number']}\t{r['at']}\t{r['source']}")
                return 0
            number = _number(args.number, args.region)
            if args.action == "add":
                await store.opt_out(number, source="cli")
                print(f"opted out {number}")
                return 0
            removed = await store.opt_in(number)
            print(f"{'removed' if removed else 'not on the list:'} {number}")
            return 0 if removed else 1

    return _run(go)


def dnd(args: argparse.Namespace) -> int:
    async def go() -> int:
        _need_db(args.db)
        async with make_store(args.db) as store:
            if args.action == "import":
                res = await store.import_dnd_csv(args.file, region=args.region)
                for p in res.problems:
                    print(p, file=sys.stderr)
                print(f"imported {res.imported} numbers, skipped {len(res.problems)} rows")
                return 0
            number = _number(args.number, args.region)
            if args.action == "add":
                await store.add_dnd([number], source="cli")
                print(f"added {number}")
                return 0
            removed = await store.remove_dnd(number)
            print(f"{'removed' if removed else 'not on the list:'} {number}")
            return 0 if removed else 1

    return _run(go)


def ambiguous(args: argparse.Namespace) -> int:
    """An ambiguous submit may or may not be at the SMSC; the agent never guesses. The operator
    asks the SMSC (by number, time and any smsc id) and then resends or drops it here; the
    running agent picks a resent row up at its next outbox scan. Each verdict is a message
    event, so the SMS log shows who decided what."""

    async def go() -> int:
        _need_db(args.db)
        async with make_store(args.db) as store:
            if args.action == "list":
                rows = await store.list_messages(MessageFilter(
                    states=[MessageState.AMBIGUOUS], limit=None, newest_first=False))
                for r in rows:
                    print("\t".join([r.id, r.created_at.isoformat(timespec="seconds"), r.rule,
                                     r.number or "-", r.gateway, ",".join(r.smsc_ids) or "-",
                                     r.detail or r.reason or ""]))
                return 0
            now = datetime.now(UTC)
            missing = []
            for message_id in args.ids:
                if args.action == "resend":
                    row = await store.transition(
                        message_id, MessageState.QUEUED, now=now, reason="operator_resend",
                        detail="resent by the operator: the SMSC did not have it",
                        from_states={MessageState.AMBIGUOUS}, next_attempt_at=now,
                        expires_at=now + timedelta(hours=1), submitting_since=None)
                else:
                    row = await store.transition(
                        message_id, MessageState.FAILED, now=now, reason="operator_dropped",
                        detail="dropped by the operator", from_states={MessageState.AMBIGUOUS},
                        submitting_since=None, next_attempt_at=None)
                if row is None:
                    missing.append(message_id)
                else:
                    print(f"{args.action}: {message_id} is now {row.state.value}")
            for message_id in missing:
                print(f"aftercall: {message_id}: no ambiguous message with that id",
                      file=sys.stderr)
            return 1 if missing else 0

    return _run(go)


# -- parsers -------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=_default_db(),
                   help="SQLite file or postgresql://user@host/db URL"
                        " (default: $AFTERCALL_DB or ./aftercall.db)")


def _window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_when(False), help="from this date/time (UTC), inclusive")
    p.add_argument("--until", type=_when(True), help="until this date/time (UTC); a date is "
                   "the whole day")
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--gateway", help="only this gateway")


def add_cli(subparsers: Any) -> None:
    """Register ``report``, ``export``, ``optout``, ``dnd`` and ``ambiguous``; each sets
    ``handler``."""
    rep = subparsers.add_parser("report", help="delivery, failures, CTR, replies, cost by rule")
    _common(rep)
    _window(rep)
    rep.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rep.add_argument("--price", type=_decimal, help="price per SMS segment, for the cost column")
    rep.add_argument("--currency", help="currency of --price, e.g. INR")
    rep.set_defaults(handler=report)

    exp = subparsers.add_parser("export", help="the SMS log, one row per message (CSV or JSON)")
    _common(exp)
    _window(exp)
    exp.add_argument("--format", choices=("csv", "json"), default="csv")
    exp.add_argument("--status", type=_states,
                     help="comma-separated states, e.g. delivered,failed")
    exp.add_argument("--mask", action="store_true", help="mask phone numbers")
    exp.add_argument("-o", "--output", help="write here instead of stdout")
    exp.set_defaults(handler=export)

    opt = subparsers.add_parser("optout", help="the opt-out list (STOP replies land here)")
    _common(opt)
    osub = opt.add_subparsers(dest="action", required=True)
    for name in ("add", "remove"):
        a = osub.add_parser(name)
        a.add_argument("number")
        a.add_argument("--region", default="IN", help="country for national numbers")
    osub.add_parser("list")
    opt.set_defaults(handler=optout)

    d = subparsers.add_parser("dnd", help="the do-not-disturb list")
    _common(d)
    dsub = d.add_subparsers(dest="action", required=True)
    for name in ("add", "remove"):
        a = dsub.add_parser(name)
        a.add_argument("number")
        a.add_argument("--region", default="IN", help="country for national numbers")
    imp = dsub.add_parser("import", help="import a CSV: one number per row, first column")
    imp.add_argument("file")
    imp.add_argument("--region", default="IN", help="country for national numbers")
    d.set_defaults(handler=dnd)

    amb = subparsers.add_parser(
        "ambiguous", help="submits whose outcome is unknown: list, resend or drop them")
    _common(amb)
    asub = amb.add_subparsers(dest="action", required=True)
    asub.add_parser("list", help="id, created, rule, number, gateway, smsc ids, why")
    for name, what in (("resend", "the SMSC does not have it: queue it again"),
                       ("drop", "do not send it: mark it failed")):
        a = asub.add_parser(name, help=what)
        a.add_argument("ids", nargs="+", metavar="ID")
    amb.set_defaults(handler=ambiguous)
