"""CLI subcommands over the store: ``report``, ``export``, ``optout`` and ``dnd`` lists, and the
operator's verdict on ``ambiguous`` messages."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from agent.dispatch.verdicts import give_verdict
from agent.errors import AftercallError, StoreError
from agent.models import MessageState
from agent.reports import (
    build_report,
    parse_states,
    parse_when,
    render_report,
    stream_export,
)
from agent.sms.numbers import classify
from agent.store.base import MessageFilter
from agent.store import is_postgres_url, make_store, report_source

Handler = Callable[[argparse.Namespace], int]


def _default_db() -> str:
    return os.environ.get("AFTERCALL_DB", "./aftercall.db")


class _When:
    """A --since/--until value, read once the time zone is known (it may come from rules.yaml)."""

    def __init__(self, value: str, end: bool) -> None:
        self.value, self.end = value, end
        parse_when(value, end=end)  # refuse a malformed value at parse time

    def at(self, timezone: str) -> datetime:
        return parse_when(self.value, end=self.end, timezone=timezone)


def _when(end: bool) -> Callable[[str], _When]:
    def parse(v: str) -> _When:
        try:
            return _When(v, end)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{v!r}: {exc}") from None

    return parse


def _timezone(args: argparse.Namespace) -> str:
    """--tz, else rules.yaml's defaults.timezone (--rules, $AFTERCALL_RULES or ./rules.yaml when
    it exists), else UTC. Only that one key is read: a report needs no gateway secrets."""
    if args.tz:
        zone = args.tz
        where = "--tz"
    else:
        path = Path(args.rules or os.environ.get("AFTERCALL_RULES") or "rules.yaml")
        if not path.exists():
            if args.rules:
                raise AftercallError(f"{path}: no such rules file")
            return "UTC"
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise AftercallError(f"{path}: cannot read defaults.timezone: {exc}") from None
        defaults = doc.get("defaults") if isinstance(doc, dict) else None
        zone = defaults.get("timezone", "UTC") if isinstance(defaults, dict) else "UTC"
        where = f"{path}: defaults.timezone"
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise AftercallError(f"{where}: unknown timezone {zone!r}") from None
    return str(zone)


def _span(args: argparse.Namespace, tz: str) -> tuple[datetime | None, datetime | None]:
    return (args.since.at(tz) if args.since else None, args.until.at(tz) if args.until else None)


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
    """Exit codes as agent.cli documents them: 1 wrong input, 3 the store cannot be opened."""
    try:
        return asyncio.run(fn())
    except StoreError as exc:  # the database cannot be reached or used: exit code 3, like run
        _error(str(exc))
        return 3
    except AftercallError as exc:
        _error(str(exc))
        return 1


def _error(message: str) -> None:
    """One error line on stderr, always ending in a newline (even when the message has none or
    several)."""
    sys.stderr.write(f"aftercall: {message.rstrip()}\n")
    sys.stderr.flush()


def _number(raw: str, region: str) -> str:
    info = classify(raw, region)
    if info.e164 is None:
        raise AftercallError(f"{raw!r}: not a phone number ({info.detail or info.kind})")
    return info.e164


def _need_db(path: str) -> None:
    if not is_postgres_url(path) and not Path(path).exists():
        raise AftercallError(f"{path}: no such database (set --db or AFTERCALL_DB)")


def stored_call(db: str, call_id: str) -> tuple[Any, list[str]] | int:
    """``aftercall explain CALL_ID``: the call record the agent stored under that id and one line
    per message row it wrote for it (rule, recipient, state, reason, detail). An exit code
    instead when the store can't be read (3) or holds no such call (1)."""
    from agent.sms.numbers import mask

    found: list[tuple[Any, list[str]]] = []

    async def fetch() -> int:
        _need_db(db)
        async with make_store(db) as store:
            record = await store.get_call(call_id)
            if record is None:
                raise AftercallError(f"{call_id}: no call with this id in {_shown(db)}")
            rows = await store.list_messages(MessageFilter(call_id=call_id, limit=None))
        found.append((record, [
            f"{r.rule} -> {r.recipient_kind.value} {mask(r.number) if r.number else '-'}: "
            f"{r.state.value}" + (f" ({r.reason})" if r.reason else "")
            + (f": {r.detail}" if r.detail else "")
            for r in rows
        ]))
        return 0

    code = _run(fetch)
    return found[0] if found else (code or 1)


def _shown(db: str) -> str:
    return "the PostgreSQL database" if is_postgres_url(db) else db


# -- handlers ------------------------------------------------------------------------------------


def report(args: argparse.Namespace) -> int:
    async def go() -> int:
        _need_db(args.db)
        tz = _timezone(args)
        since, until = _span(args, tz)
        async with make_store(args.db) as store:
            rep = await build_report(store, since=since, until=until, rule=args.rule, pbx=args.pbx,
                                     gateway=args.gateway, price_per_segment=args.price,
                                     currency=args.currency, timezone=tz)
        sys.stdout.write(render_report(rep, args.format))
        return 0

    return _run(go)


def export(args: argparse.Namespace) -> int:
    async def go() -> int:
        _need_db(args.db)
        tz = _timezone(args)
        since, until = _span(args, tz)
        f = MessageFilter(states=args.status, rule=args.rule, gateway=args.gateway, pbx=args.pbx,
                          since=since,
                          until=until, limit=None, newest_first=False)
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
        return 0

    return _run(go)


def optout(args: argparse.Namespace) -> int:
    # The list commands create (or migrate) the database: on a fresh install the operator may
    # load the lists before the agent first runs.
    async def go() -> int:
        async with make_store(args.db) as store:
            if args.action == "list":
                for e in reversed(await store.list_numbers("optout", limit=10**9)):
                    print(f"{e.number}\t{e.at.isoformat()}\t{e.source}")
                return 0
            number = _number(args.number, args.region)
            if args.action == "add":
                await store.opt_out(number, source="cli")
                print(f"opted out {number}")
                return 0
            removed = await store.opt_in(number, source="cli")
            print(f"{'removed' if removed else 'not on the list:'} {number}")
            return 0 if removed else 1

    return _run(go)


def dnd(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with make_store(args.db) as store:
            if args.action == "import":
                res = await store.import_dnd_csv(args.file, region=args.region)
                for p in res.problems:
                    _error(p)
                print(f"imported {res.imported} numbers, skipped {len(res.problems)} rows")
                return 0
            number = _number(args.number, args.region)
            if args.action == "add":
                await store.add_dnd([number], source="cli")
                print(f"added {number}")
                return 0
            removed = await store.remove_dnd(number, source="cli")
            print(f"{'removed' if removed else 'not on the list:'} {number}")
            return 0 if removed else 1

    return _run(go)


def ambiguous(args: argparse.Namespace) -> int:
    """An ambiguous submit may or may not be at the SMSC; the agent never guesses. The operator
    asks the SMSC (by number, time and any smsc id) and then resends or drops it here; the
    running agent picks a resent row up at its next outbox scan. Each verdict is a message
    event, so the SMS log shows who decided what."""

    async def go() -> int:
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
                row = await give_verdict(store, message_id, args.action,
                                         who="the operator (cli)", now=now)
                if row is None:
                    missing.append(message_id)
                else:
                    print(f"{args.action}: {message_id} is now {row.state.value}")
            for message_id in missing:
                _error(f"{message_id}: no ambiguous message with that id")
            return 1 if missing else 0

    return _run(go)


def prune_cmd(args: argparse.Namespace) -> int:
    """Prune by hand what retention would (see README "Retention"). Safe beside a running
    agent: batches are short write transactions, rows in flight are never touched."""
    from agent import retention
    from agent.store.sqlite.retention import vacuum_file

    async def go() -> int:
        _need_db(args.db)
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
                return 0
            c = await retention.prune(store, details_before=details, rows_before=rows,
                                      batch=args.batch, pause=0)
            after = await store.space()
        if args.vacuum:
            await asyncio.to_thread(vacuum_file, args.db)
            after["bytes"] = Path(args.db).stat().st_size
        print(f"pruned: details of {c.details} messages, {c.messages} messages, {c.calls} call"
              f" records, {c.other} other rows; database {before['bytes'] / 1e6:.1f} MB ->"
              f" {after['bytes'] / 1e6:.1f} MB")
        return 0

    return _run(go)


# -- parsers -------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=_default_db(),
                   help="SQLite file or postgresql://user@host/db URL"
                        " (default: $AFTERCALL_DB or ./aftercall.db)")


def _window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_when(False),
                   help="from this date/time (in the report's time zone), inclusive")
    p.add_argument("--until", type=_when(True), help="until this date/time; a date is "
                   "the whole day")
    p.add_argument("--tz", help="time zone for days and local times (default: rules.yaml's "
                   "defaults.timezone, else UTC)")
    p.add_argument("--rules", help="rules.yaml to read defaults.timezone from (default: "
                   "$AFTERCALL_RULES or ./rules.yaml)")
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--gateway", help="only this gateway")
    p.add_argument("--pbx", help="only calls of this PBX (several may share a database)")


def add_cli(subparsers: Any) -> None:
    """Register ``report``, ``export``, ``prune``, ``optout``, ``dnd`` and ``ambiguous``; each sets
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

    pr = subparsers.add_parser(
        "prune", help="remove message texts, numbers, history and receipts before a date")
    _common(pr)
    pr.add_argument("--before", type=_when(False), required=True,
                    help="prune the details of final messages created before this date (UTC)")
    pr.add_argument("--rows-before", type=_when(False),
                    help="also delete whole messages created before this date (they leave "
                    "the reports)")
    pr.add_argument("--dry-run", action="store_true", help="count, change nothing")
    pr.add_argument("--batch", type=int, default=2000, help="rows per write transaction")
    pr.add_argument("--vacuum", action="store_true",
                    help="then rewrite the file (VACUUM; blocks writers while it runs), which "
                    "also enables incremental space reclaim on databases made before it")
    pr.set_defaults(handler=prune_cmd)

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
