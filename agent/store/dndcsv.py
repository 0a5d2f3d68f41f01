"""A DND import file read into E.164 numbers and ``file:line: problem`` strings, and
``import_dnd_csv`` on top of a store's ``add_dnd``: the same rules for both stores, the CLI and
the dashboard's upload."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable
from pathlib import Path

import phonenumbers

from agent.errors import StoreError
from agent.store.base import ImportResult


def read_number_csv(path: Path, region: str | None) -> tuple[list[str], list[str]]:
    """Parse a one-number-per-row CSV into E.164 numbers plus ``file:line: problem`` strings."""
    numbers: list[str] = []
    problems: list[str] = []
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
    with fh:
        reader = csv.reader(fh)
        for cells in reader:
            line = reader.line_num
            raw = cells[0].strip() if cells else ""
            if not raw or raw.startswith("#"):
                continue
            if not any(ch.isdigit() for ch in raw):
                if not numbers and not problems:
                    continue  # a header row
                problems.append(f"{path}:{line}: not a phone number")
                continue
            try:
                parsed = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                problems.append(
                    f"{path}:{line}: not a phone number"
                    + ("" if region else " (national numbers need a region)")
                )
                continue
            if not phonenumbers.is_possible_number(parsed):
                problems.append(f"{path}:{line}: not a possible phone number")
                continue
            numbers.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return numbers, problems


class DndImport:
    """``import_dnd_csv`` for a store class that has ``add_dnd`` (both stores' RecordOps)."""

    add_dnd: Callable[..., Awaitable[int]]

    async def import_dnd_csv(
        self, path: str | Path, *, region: str | None = None, source: str | None = None
    ) -> ImportResult:
        """Import a DND list: one number per row in the first column; a header row, blank rows
        and ``#`` comments are skipped. National numbers need ``region`` (e.g. "IN")."""
        numbers, problems = await asyncio.to_thread(read_number_csv, Path(path), region)
        imported = await self.add_dnd(numbers, source=source or f"csv:{Path(path).name}")
        return ImportResult(imported, tuple(problems))
