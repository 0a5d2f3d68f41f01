"""When a delayed or scheduled text is due: ``send.delay`` after the call, ``at: next_open`` of the business hours.

Pure: a call's end (UTC) in, the UTC instant the text may go out. The business-hours calendar
(``defaults.business_hours``) gives each weekday its opening hours in ``defaults.timezone`` and
lists holidays (closed all day).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HORIZON_DAYS = 400  # a calendar closed for longer than this has no next opening


@dataclass(frozen=True, slots=True)
class Calendar:
    """Opening hours per weekday ("mon" -> (09:00, 18:00)), holidays, and the zone."""

    hours: Mapping[str, tuple[time, time]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    timezone: str = "UTC"

    def next_open(self, at: datetime) -> datetime | None:
        """``at`` itself when the business is open then, else the next opening (UTC); None
        when nothing opens within a year or so."""
        tz = ZoneInfo(self.timezone)
        local = at.astimezone(tz)
        for n in range(_HORIZON_DAYS):
            day = local.date() + timedelta(days=n)
            span = self.hours.get(WEEKDAYS[day.weekday()])
            if span is None or day in self.holidays:
                continue
            start, end = span
            opens = datetime.combine(day, start, tzinfo=tz)
            closes = datetime.combine(day, end, tzinfo=tz)
            if n == 0 and local >= closes:
                continue
            return max(opens, local).astimezone(UTC) if n == 0 else opens.astimezone(UTC)
        return None


def due_at(ended_at: datetime, delay: timedelta | None, next_open: bool,
           calendar: Calendar | None) -> datetime | None:
    """When the text is due: ``delay`` after the call, then (``next_open``) the next opening
    of the calendar; None when the calendar never opens."""
    at = ended_at + (delay or timedelta(0))
    if next_open:
        return calendar.next_open(at) if calendar is not None else None
    return at
