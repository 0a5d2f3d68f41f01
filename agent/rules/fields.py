"""The scalar types of rules.yaml (clock times, weekdays, regions, timezones, language tags)
and the strict base model every section's model derives from."""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
)

from agent.scalars import NonEmpty
from agent.sms.numbers import is_region

# Every scalar reaches these models as a string (the loader reads YAML with no implicit typing,
# so "+919812345678", "09:00", "on" and "NO" stay text); pydantic's lax mode turns "10" into
# an int and "true" into a bool where a field asks for one.

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = dict(
    zip(
        _WEEKDAYS,
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        strict=True,
    )
)

#: Keys whose values are secrets: never shown in errors, reprs, check output or logs.
SECRET_KEYS = frozenset(
    {"password", "auth_token", "secret", "webhook_secret", "api_key", "token", "apikey"}
)


def parse_clock(value: Any) -> time:
    """ "HH:MM" on a 24-hour clock; "24:00" is not a time."""
    if isinstance(value, time):
        return value
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(value).strip())
    if m is None:
        raise ValueError(f"bad time {value!r}: expected HH:MM on a 24-hour clock, e.g. 09:00")
    return time(int(m.group(1)), int(m.group(2)))


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}: expected an IANA name such as Asia/Kolkata")
    return value


def _check_region(value: str) -> str:
    value = value.upper()
    if not is_region(value):
        raise ValueError(f"unknown region {value!r}: expected an ISO 3166 code such as IN")
    return value


def listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _day(text: str) -> str:
    key = text.strip().lower()
    if len(key) >= 3 and key[:3] in _WEEKDAYS and _FULL_DAYS[key[:3]].startswith(key):
        return key[:3]
    raise ValueError(f"bad day {text!r}: expected one of {', '.join(_WEEKDAYS)} or a range mon-fri")


def parse_days(value: Any) -> Any:
    """["mon", "tue"] or "mon-fri" (a range may wrap: "fri-mon") or a mix."""
    items = listify(value)
    if not isinstance(items, list):
        return items
    out: list[str] = []
    for item in items:
        first, sep, last = str(item).partition("-")
        i, end = _WEEKDAYS.index(_day(first)), _day(last) if sep else _day(first)
        while _WEEKDAYS[i] != end:
            out.append(_WEEKDAYS[i])
            i = (i + 1) % 7
        out.append(end)
    return out


Clock = Annotated[time, BeforeValidator(parse_clock)]
def _lang(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", value):
        raise ValueError(f"bad language {value!r}: expected a tag such as hi, en-IN or pt_BR")
    return value


#: A language tag as Asterisk and dialplans write it: en, hi, en-IN, pt_BR.
LangTag = Annotated[str, AfterValidator(_lang)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Region = Annotated[str, AfterValidator(_check_region)]
StrList = Annotated[tuple[NonEmpty, ...], BeforeValidator(listify)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

