"""rules.yaml's schema: strict pydantic models (extra keys refused) and the scalar types they use."""

from __future__ import annotations

import re
from datetime import time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from agent.sms.numbers import is_region
from agent.sms.policy import AudienceLimits, Limits
from agent.sms.policy import RateLimit as PolicyRate
from agent.sms.untrusted import DEFAULT_MAX_LENGTH, UntrustedPolicy

# Every scalar reaches these models as a string (the loader reads YAML with no implicit typing,
# so "+919812345678", "09:00", "on" and "NO" stay text); pydantic's lax mode turns "10" into
# an int and "true" into a bool where a field asks for one.

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
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


def parse_duration(value: Any) -> timedelta:
    """ "15m", "24h", "60s", "1h30m", "2d"; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        # pydantic reports ValueError as a validation error, a TypeError would escape
        raise ValueError("expected a duration such as 15m, 24h, 60s or 1h30m")  # noqa: TRY004
    text = value.strip()
    try:
        if text.isdigit():
            return timedelta(seconds=int(text))
        m = _DURATION.fullmatch(text)
        if not text or m is None:
            raise ValueError(f"bad duration {value!r}: expected e.g. 15m, 24h, 60s or 1h30m")
        d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    except OverflowError:
        # timedelta stops at 999,999,999 days; pydantic turns only ValueError into a problem.
        raise ValueError(f"duration {value!r} is too long") from None


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


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _day(text: str) -> str:
    key = text.strip().lower()
    if len(key) >= 3 and key[:3] in _WEEKDAYS and _FULL_DAYS[key[:3]].startswith(key):
        return key[:3]
    raise ValueError(f"bad day {text!r}: expected one of {', '.join(_WEEKDAYS)} or a range mon-fri")


def _parse_days(value: Any) -> Any:
    """["mon", "tue"] or "mon-fri" (a range may wrap: "fri-mon") or a mix."""
    items = _listify(value)
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


def _hex_int(value: Any) -> Any:
    return int(value, 0) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Clock = Annotated[time, BeforeValidator(parse_clock)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Region = Annotated[str, AfterValidator(_check_region)]
NonEmpty = Annotated[str, Field(min_length=1)]
StrList = Annotated[tuple[NonEmpty, ...], BeforeValidator(_listify)]
HexInt = Annotated[int, BeforeValidator(_hex_int), Field(ge=0, le=0xFFFF)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RateLimit(_Model):
    count: int
    per: timedelta

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            count, sep, per = value.partition("/")
            if not sep or not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"bad rate {value!r}: expected COUNT/DURATION, e.g. 3/1h")
            return {"count": int(count), "per": parse_duration(per.strip())}
        return value

    def __str__(self) -> str:
        return f"{self.count}/{int(self.per.total_seconds())}s"


def _off(value: Any) -> Any:
    """``off`` (or none/no/false) turns a default limit off."""
    if isinstance(value, str) and value.strip().lower() in ("off", "none", "no", "false"):
        return None
    return value


OptionalRate = Annotated[RateLimit | None, BeforeValidator(_off)]


def _rate(count: int, seconds: int) -> RateLimit:
    return RateLimit(count=count, per=timedelta(seconds=seconds))


class AgentRateLimits(_Model):
    """Texts to agents' mobiles, counted apart from callers' (a pumping burst that spends the
    callers' budget must not silence the agents' summaries)."""

    per_number: OptionalRate = _rate(100, 3600)
    global_: OptionalRate = Field(default=_rate(200, 60), alias="global")
    daily: OptionalRate = _rate(5000, 86400)


class RateLimits(_Model):
    """Texts to callers (and fixed numbers). Defaults are on: ``off`` turns one off."""

    per_number: OptionalRate = _rate(3, 3600)
    global_: OptionalRate = Field(default=_rate(100, 60), alias="global")
    daily: OptionalRate = _rate(2000, 86400)
    agents: AgentRateLimits = AgentRateLimits()


def _countries(value: Any) -> Any:
    items = _listify(value)
    if not isinstance(items, list):
        return items
    out = []
    for item in items:
        code = str(item).strip().upper()
        if code in ("ANY", "*"):
            if len(items) > 1:
                raise ValueError("'any' allows every country: list it alone")
            return ["*"]
        if not is_region(code):
            raise ValueError(f"unknown country {item!r}: expected an ISO 3166 code such as IN")
        out.append(code)
    return out


class QuietHours(_Model):
    from_: Clock = Field(alias="from")
    to: Clock
    action: Literal["defer", "drop", "send"] = "defer"


class QuietHoursOverride(_Model):
    """A rule's override; missing times inherit the defaults. ``off`` means action send."""

    from_: Clock | None = Field(default=None, alias="from")
    to: Clock | None = None
    action: Literal["defer", "drop", "send"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("off", "false", "no", "none"):
            return {"action": "send"}
        return value


class Untrusted(_Model):
    """Values a caller controls (caller_name, caller, and these channel variables): cleaned,
    cut to ``max_length`` and refused when they carry a URL (agent.sms.untrusted)."""

    max_length: int = Field(default=DEFAULT_MAX_LENGTH, ge=1, le=160)
    vars: StrList = ()


class Defaults(_Model):
    region: Region = "IN"
    timezone: Timezone = "UTC"
    sender_id: NonEmpty
    gateway: NonEmpty
    quiet_hours: QuietHours | None = None
    max_age: Duration | None = None
    public_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = None
    price_per_segment: Decimal | None = Field(default=None, ge=0)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    dlt_entity_id: Annotated[str, Field(pattern=r"^\d{10,25}$")] | None = None
    rate_limits: RateLimits = RateLimits()
    # Where texts may go. None: the region's own country only (SMS pumping lives on premium
    # and international ranges); ["any"] allows every country.
    allowed_countries: Annotated[tuple[str, ...], BeforeValidator(_countries)] | None = None
    untrusted: Untrusted = Untrusted()

    @field_validator("sender_id")
    @classmethod
    def _sender(cls, v: str) -> str:
        # GSM 03.40: an alphanumeric originator is at most 11 characters; numeric up to 15 digits.
        if not (re.fullmatch(r"[A-Za-z0-9 ]{1,11}", v) or re.fullmatch(r"\+?\d{1,15}", v)):
            raise ValueError("sender_id must be 1-11 letters/digits or a number of up to 15 digits")
        return v

    def countries(self) -> frozenset[str] | None:
        """The countries texts may go to; None means any."""
        if self.allowed_countries == ("*",):
            return None
        return frozenset(self.allowed_countries or (self.region,))

    def untrusted_policy(self) -> UntrustedPolicy:
        return UntrustedPolicy(self.untrusted.max_length, frozenset(self.untrusted.vars))

    def limits(self) -> Limits:
        """The policy's view of these settings (the one object check and run both use)."""

        def rate(r: RateLimit | None) -> PolicyRate | None:
            return PolicyRate(r.count, r.per) if r is not None else None

        rl, ag = self.rate_limits, self.rate_limits.agents
        return Limits(
            callers=AudienceLimits(rate(rl.per_number), rate(rl.global_), rate(rl.daily)),
            agents=AudienceLimits(rate(ag.per_number), rate(ag.global_), rate(ag.daily)),
            allowed_countries=self.countries(),
        )

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v


class Agent(_Model):
    name: NonEmpty
    mobile: NonEmpty | None = None  # normalised to E.164 by the loader (needs defaults.region)


class Template(_Model):
    text: NonEmpty
    max_segments: int = Field(default=1, ge=1, le=10)
    category: Literal["transactional", "promotional", "service"] = "transactional"
    dlt_template_id: Annotated[str, Field(pattern=r"^\d{10,25}$")] | None = None
    dlt_entity_id: Annotated[str, Field(pattern=r"^\d{10,25}$")] | None = None
    language: NonEmpty | None = None
    asks_rating: bool = False


class VarMatch(_Model):
    """One channel-variable condition: ``present``/``absent``, an exact value, any of a list,
    or ``{regex: ...}`` (searched, so anchor it). ``{equals: present}`` matches the literal."""

    present: bool | None = None
    equals: tuple[str, ...] | None = None
    regex: re.Pattern[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value in ("present", "absent"):
                return {"present": value == "present"}
            return {"equals": [value]}
        if isinstance(value, list):
            return {"equals": value}
        if isinstance(value, dict) and isinstance(value.get("equals"), str):
            return {**value, "equals": [value["equals"]]}
        return value

    @field_validator("regex", mode="before")
    @classmethod
    def _compile(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return re.compile(v)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
            except (OverflowError, RecursionError):
                # a{4294967296}; groups nested past the parser's recursion limit
                raise ValueError("bad regular expression: too large to compile") from None
        return v

    def describe(self) -> str:
        if self.present is not None:
            return "present" if self.present else "absent"
        if self.regex is not None:
            return f"matching /{self.regex.pattern}/"
        return f"one of {list(self.equals or ())}"


class TimeWindow(_Model):
    from_: Clock = Field(alias="from")
    to: Clock


CallerType = Literal["mobile", "landline", "anonymous", "international", "short_code", "invalid"]


class Match(_Model):
    """Every condition present must hold; lists mean any of."""

    queue: StrList | None = None
    did: StrList | None = None
    agent: StrList | None = None
    tags: StrList | None = None
    direction: (
        Annotated[tuple[Literal["inbound", "outbound", "internal"], ...], BeforeValidator(_listify)]
        | None
    ) = None
    disposition: (
        Annotated[
            tuple[Literal["answered", "missed", "abandoned", "busy", "failed", "voicemail"], ...],
            BeforeValidator(_listify),
        ]
        | None
    ) = None
    hangup_by: (
        Annotated[tuple[Literal["caller", "agent", "system"], ...], BeforeValidator(_listify)]
        | None
    ) = None
    caller_type: Annotated[tuple[CallerType, ...], BeforeValidator(_listify)] | None = None
    min_talk: Duration | None = None
    max_talk: Duration | None = None
    min_wait: Duration | None = None
    max_wait: Duration | None = None
    time: TimeWindow | None = None
    days: Annotated[tuple[str, ...], BeforeValidator(_parse_days)] | None = None
    vars: dict[str, VarMatch] | None = None


class Send(_Model):
    to: StrList = ("caller",)  # caller | agent | both | numbers, or a list of them
    template: NonEmpty
    gateway: NonEmpty | None = None
    sender_id: NonEmpty | None = None


class Rule(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    on: Literal["call_completed", "call_connected"] = "call_completed"
    enabled: bool = True
    match: Match = Match()
    send: Send
    cooldown: Duration | None = None
    continue_: bool = Field(default=False, alias="continue")
    quiet_hours: QuietHoursOverride | None = None
    max_age: Duration | None = None


class SmppGateway(_Model):
    type: Literal["smpp"]
    host: NonEmpty
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: Annotated[str, Field(min_length=1, max_length=15)]  # SMPP 3.4: C-string of 16
    password: SecretStr | None = None
    system_type: Annotated[str, Field(max_length=12)] = ""
    bind: Literal["transceiver", "transmitter"] = "transceiver"
    window: int = Field(default=10, ge=1, le=1000)
    tps: float | None = Field(default=None, gt=0)
    enquire_link: Duration = timedelta(seconds=30)
    tlvs: dict[Literal["dlt_entity_id", "dlt_template_id"], HexInt] = {}
    backup: NonEmpty | None = None

    @field_validator("password")
    @classmethod
    def _password_len(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) > 8:
            # SMPP 3.4 section 5.2.3: password is a C-Octet String of at most 9 octets.
            raise ValueError("SMPP passwords are at most 8 characters (SMPP 3.4 section 5.2.3)")
        return v


class HttpGateway(_Model):
    type: Literal["http"]
    preset: Literal["kannel", "jasmin", "twilio", "generic"] = "generic"
    url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    method: Literal["GET", "POST"] | None = None
    username: NonEmpty | None = None
    password: SecretStr | None = None
    account_sid: NonEmpty | None = None
    auth_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    timeout: Duration = timedelta(seconds=5)
    tps: float | None = Field(default=None, gt=0)
    backup: NonEmpty | None = None

    @model_validator(mode="after")
    def _preset_fields(self) -> HttpGateway:
        need = {
            "kannel": ("url", "username", "password"),
            "jasmin": ("url", "username", "password"),
            "twilio": ("account_sid", "auth_token"),
            "generic": ("url",),
        }[self.preset]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"preset {self.preset} needs {', '.join(missing)}")
        return self


Gateway = Annotated[SmppGateway | HttpGateway, Field(discriminator="type")]


class KeywordAction(_Model):
    """``opt_out``/``opt_in`` or ``{tag: ..., reply: template}``; opt-outs may reply too."""

    action: Literal["opt_out", "opt_in", "tag"] = "tag"
    tag: NonEmpty | None = None
    reply: NonEmpty | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("opt_out", "opt_in"):
                raise ValueError(f"expected opt_out, opt_in or {{tag, reply}}, not {value!r}")
            return {"action": value}
        return value

    @model_validator(mode="after")
    def _needs_tag(self) -> KeywordAction:
        if self.action == "tag" and self.tag is None:
            raise ValueError("a keyword action needs a tag (or is opt_out / opt_in)")
        return self


class Replies(_Model):
    keywords: dict[Annotated[str, Field(pattern=r"^\S+$")], KeywordAction] = {}
    sentiment: bool = False


class TopLevel(_Model):
    """The document's outline; each section is validated on its own so that one bad entry
    does not hide the problems of the others."""

    version: int
    defaults: dict[str, Any]
    agents: dict[str, Any] | None = None
    templates: dict[str, Any]
    rules: list[Any]
    gateways: dict[str, Any]
    replies: dict[str, Any] | None = None

    @field_validator("version")
    @classmethod
    def _v1(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"unsupported version {v}: this aftercall reads version 1")
        return v


class RulesConfig(_Model):
    """The whole validated file."""

    version: int = 1
    defaults: Defaults
    agents: dict[str, Agent] = {}
    templates: dict[str, Template]
    rules: tuple[Rule, ...]
    gateways: dict[str, SmppGateway | HttpGateway]
    replies: Replies = Replies()
