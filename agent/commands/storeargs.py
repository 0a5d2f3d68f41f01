"""What the commands over the store share: ``--db``, the report window and its time zone, and
phone numbers typed by the operator."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from agent.errors import AftercallError
from agent.models import MessageState
from agent.reports import parse_states, parse_when
from agent.sms.numbers import classify
from agent.store import is_postgres_url


def default_db() -> str:
    return os.environ.get("AFTERCALL_DB", "./aftercall.db")


class When:
    """A --since/--until value, read once the time zone is known (it may come from rules.yaml)."""

    def __init__(self, value: str, end: bool) -> None:
        self.value, self.end = value, end
        parse_when(value, end=end)  # refuse a malformed value at parse time

    def at(self, timezone: str) -> datetime:
        return parse_when(self.value, end=self.end, timezone=timezone)


def when(end: bool) -> Callable[[str], When]:
    def parse(v: str) -> When:
        try:
            return When(v, end)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{v!r}: {exc}") from None

    return parse


def timezone(args: argparse.Namespace) -> str:
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


def span(args: argparse.Namespace, tz: str) -> tuple[datetime | None, datetime | None]:
    since = args.since.at(tz) if args.since else None
    until = args.until.at(tz) if args.until else None
    if since and until and until < since:
        # an empty report would look like a quiet period
        raise AftercallError(f"--until {args.until.value} is before --since {args.since.value}")
    return since, until


def states(v: str) -> list[MessageState]:
    try:
        return parse_states(v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{v!r}: {exc}") from None


def price(v: str) -> Decimal:
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{v!r}: expected a price such as 0.12") from None
    if not d.is_finite():  # NaN made the comparison below raise; Infinity a cost of Infinity
        raise argparse.ArgumentTypeError(f"{v!r}: expected a price such as 0.12")
    if d < 0:
        raise argparse.ArgumentTypeError(f"{v!r}: a price cannot be negative")
    return d


def number(raw: str, region: str) -> str:
    info = classify(raw, region)
    if info.e164 is None:
        raise AftercallError(f"{raw!r}: not a phone number ({info.detail or info.kind})")
    return info.e164


def need_db(path: str) -> None:
    if not is_postgres_url(path) and not Path(path).exists():
        raise AftercallError(f"{path}: no such database (set --db or AFTERCALL_DB)")


def shown(db: str) -> str:
    return "the PostgreSQL database" if is_postgres_url(db) else db


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=default_db(),
                   help="SQLite file or postgresql://user@host/db URL"
                        " (default: $AFTERCALL_DB or ./aftercall.db)")


def add_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=when(False),
                   help="from this date/time (in the report's time zone), inclusive")
    p.add_argument("--until", type=when(True), help="until this date/time; a date is "
                   "the whole day")
    p.add_argument("--tz", help="time zone for days and local times (default: rules.yaml's "
                   "defaults.timezone, else UTC)")
    p.add_argument("--rules", help="rules.yaml to read defaults.timezone from (default: "
                   "$AFTERCALL_RULES or ./rules.yaml)")
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--gateway", help="only this gateway")
    p.add_argument("--pbx", help="only calls of this PBX (several may share a database)")


def add_number(p: argparse.ArgumentParser) -> None:
    p.add_argument("number")
    add_region(p)


def add_region(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", default="IN", help="country for national numbers")
