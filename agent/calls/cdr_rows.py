"""Asterisk's CSV CDR rows (cdr_csv's Master.csv), parsed and checked one line at a time (pure).

The columns are cdr_csv's (Asterisk 22 ``build_csv_record``) with the lab's cdr.conf:
``loguniqueid``, ``loguserfield`` and ``newcdrcolumns`` all on, 21 per row (``CDR_COLUMNS``).
Times are UTC with ``usegmtime=yes``, else the PBX's local time (pass ``tz``); second resolution.
Grouping rows into call records is ``agent.calls.cdr``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

from agent.calls.hooks import TAG_KEYS
from agent.errors import ProtocolError

CDR_COLUMNS: tuple[str, ...] = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
    "uniqueid", "userfield", "peeraccount", "linkedid", "sequence",
)
SOURCE_VAR = "aftercall_source"
#: cdr_csv builds each row in a 1 KiB buffer; anything much longer is not one of its rows.
MAX_LINE = 4096
#: Rows one call may have; more is a runaway dialplan (or garbage) and the rest are ignored.
MAX_ROWS_PER_CALL = 64
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class CdrRowError(ProtocolError):
    """One CSV line is not a cdr_csv row; names the line and the column."""

    def __init__(self, message: str, *, line: int, column: str | None = None) -> None:
        self.line = line
        self.column = column
        self.reason = f"{column}: {message}" if column else message
        super().__init__(f"line {line}: {self.reason}")


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One cdr_csv row, typed. Times are aware UTC; ``line`` is its 1-based line in the file."""

    line: int
    accountcode: str
    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime
    answer: datetime | None
    end: datetime
    duration: int
    billsec: int
    disposition: str  # ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION
    amaflags: str
    uniqueid: str
    userfield: str
    peeraccount: str
    linkedid: str
    sequence: int


@dataclass(frozen=True, slots=True)
class MalformedRow:
    """A line that was skipped. ``reason`` names the column, never the row's content."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParsedCdr:
    rows: tuple[CdrRow, ...]
    problems: tuple[MalformedRow, ...]


# -- parsing ------------------------------------------------------------------------------------

def _time(value: str, line: int, column: str, tz: tzinfo) -> datetime:
    try:
        naive = datetime.strptime(value, _TIME_FORMAT)
    except ValueError:
        raise CdrRowError(f"not a time {_TIME_FORMAT!r}", line=line, column=column) from None
    return naive.replace(tzinfo=tz).astimezone(UTC)


def _int(value: str, line: int, column: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise CdrRowError("not a non-negative integer", line=line, column=column)
    return int(value)


def parse_line(text: str, line: int, *, tz: tzinfo = UTC) -> CdrRow:
    """One physical line of Master.csv. Raises ``CdrRowError`` naming the line and column."""
    text = text.rstrip("\r\n")
    if len(text) > MAX_LINE:
        raise CdrRowError(f"longer than {MAX_LINE} characters", line=line)
    try:
        [fields] = list(csv.reader([text], strict=True))
    except (csv.Error, ValueError):
        raise CdrRowError("not one CSV record (bad quoting)", line=line) from None
    if len(fields) != len(CDR_COLUMNS):
        raise CdrRowError(
            f"expected {len(CDR_COLUMNS)} columns (cdr_csv with loguniqueid, loguserfield and"
            f" newcdrcolumns), got {len(fields)}",
            line=line,
        )
    f = dict(zip(CDR_COLUMNS, fields, strict=True))
    if not f["linkedid"]:
        raise CdrRowError("empty", line=line, column="linkedid")
    return CdrRow(
        line=line,
        accountcode=f["accountcode"],
        src=f["src"],
        dst=f["dst"],
        dcontext=f["dcontext"],
        clid=f["clid"],
        channel=f["channel"],
        dstchannel=f["dstchannel"],
        lastapp=f["lastapp"],
        lastdata=f["lastdata"],
        start=_time(f["start"], line, "start", tz),
        answer=_time(f["answer"], line, "answer", tz) if f["answer"] else None,
        end=_time(f["end"], line, "end", tz),
        duration=_int(f["duration"], line, "duration"),
        billsec=_int(f["billsec"], line, "billsec"),
        disposition=f["disposition"],
        amaflags=f["amaflags"],
        uniqueid=f["uniqueid"],
        userfield=f["userfield"],
        peeraccount=f["peeraccount"],
        linkedid=f["linkedid"],
        sequence=_int(f["sequence"], line, "sequence"),
    )


def parse_lines(
    lines: Iterable[str] | Iterable[tuple[int, str]],
    *,
    source: str = "Master.csv",
    tz: tzinfo = UTC,
) -> ParsedCdr:
    """Parse lines (strings numbered from 1, or ``(line_number, text)`` pairs). A malformed
    line is reported in ``problems`` and skipped; blank lines are ignored."""
    rows: list[CdrRow] = []
    problems: list[MalformedRow] = []
    for i, item in enumerate(lines, start=1):
        lineno, text = item if isinstance(item, tuple) else (i, item)
        if not text.strip():
            continue
        try:
            rows.append(parse_line(text, lineno, tz=tz))
        except CdrRowError as exc:
            problems.append(MalformedRow(source, lineno, exc.reason))
    return ParsedCdr(tuple(rows), tuple(problems))


def parse_userfield(value: str, *, tag_keys: Iterable[str] = ("SMS_TAG",)) -> tuple[
    tuple[str, ...], dict[str, str]
]:
    """``SMS_TAG=Support;TICKET=123`` -> tags ``("Support",)``, vars of every pair. Tags come
    from the hooks' keys (``tag``, ``tags``, ``name``, any case) and ``tag_keys``
    (comma-separated allowed); parts without ``=`` or
    with an empty key or value are ignored (a userfield is free text to other tools)."""
    tags: list[str] = []
    vars_: dict[str, str] = {}
    extra = set(tag_keys)
    for part in value.split(";"):
        key, eq, val = part.partition("=")
        key, val = key.strip(), val.strip()
        if not (eq and key and val):
            continue
        vars_[key] = val
        if key.lower() in TAG_KEYS or key in extra:
            tags.extend(t for t in (x.strip() for x in val.split(",")) if t and t not in tags)
    return tuple(tags), vars_


# -- grouping and records ----------------------------------------------------------------------
