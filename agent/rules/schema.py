"""rules.yaml's schema: strict pydantic models (extra keys refused) and the scalar types they use."""

from __future__ import annotations

import re
import secrets
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from agent.ami.config import PbxLinkConfig
from agent.gateways.config import GatewayConfig, HttpConfig, SmppConfig
from agent.scalars import Duration, HexInt, NonEmpty, parse_duration
from agent.rules.schedule import Calendar
from agent.sms.numbers import is_region
from agent.sms.policy import AudienceLimits, Limits
from agent.sms.recording import MIN_SECRET, RecordingSigner
from agent.sms.policy import RateLimit as PolicyRate
from agent.sms.spend import Caps, SpendPolicy
from agent.sms.untrusted import DEFAULT_MAX_LENGTH, UntrustedPolicy

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


Clock = Annotated[time, BeforeValidator(parse_clock)]
def _lang(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", value):
        raise ValueError(f"bad language {value!r}: expected a tag such as hi, en-IN or pt_BR")
    return value


#: A language tag as Asterisk and dialplans write it: en, hi, en-IN, pt_BR.
LangTag = Annotated[str, AfterValidator(_lang)]
Timezone = Annotated[str, AfterValidator(_check_timezone)]
Region = Annotated[str, AfterValidator(_check_region)]
StrList = Annotated[tuple[NonEmpty, ...], BeforeValidator(_listify)]


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


class Dnd(_Model):
    """Numbers on the DND (do-not-disturb) list. Promotional texts never reach them; whether
    transactional ones may is the operator's registration's call (India's TRAI lets a
    registered transactional route through), so the default is to suppress."""

    transactional: Literal["send", "suppress"] = "suppress"


Money = Annotated[Decimal, Field(ge=0)]
#: A destination prefix ("+91", "+9198") or "default" (any other number on that gateway).
Prefix = Annotated[str, Field(pattern=r"^(default|\+\d{1,15})$")]


class SpendCaps(_Model):
    """At most this much (defaults.currency) per local day / month."""

    daily: Money | None = None
    monthly: Money | None = None

    def caps(self) -> Caps:
        return Caps(self.daily, self.monthly)


class Spend(_Model):
    """Prices per segment per gateway and destination prefix (the longest prefix wins, then
    the gateway's ``default``, then ``price_per_segment``), and caps on all texts together."""

    prices: dict[NonEmpty, dict[Prefix, Money]] = {}
    daily: Money | None = None
    monthly: Money | None = None


def _hours(value: Any) -> Any:
    """ "09:00-18:00" -> (09:00, 18:00)."""
    if not isinstance(value, str):
        return value
    start, sep, end = value.partition("-")
    if not sep:
        raise ValueError(f"bad opening hours {value!r}: expected HH:MM-HH:MM, e.g. 09:00-18:00")
    opens, closes = parse_clock(start.strip()), parse_clock(end.strip())
    if opens >= closes:
        raise ValueError(f"opening hours {value!r} close before they open")
    return (opens, closes)


class BusinessHours(_Model):
    """When the business is open (``at: next_open``): weekdays or ranges -> HH:MM-HH:MM in
    defaults.timezone, and holidays (YYYY-MM-DD) closed all day."""

    open: dict[str, Annotated[tuple[time, time], BeforeValidator(_hours)]]
    holidays: tuple[date, ...] = ()

    @field_validator("open")
    @classmethod
    def _days(cls, v: dict[str, tuple[time, time]]) -> dict[str, tuple[time, time]]:
        out: dict[str, tuple[time, time]] = {}
        for spec, span in v.items():
            for day in _parse_days(spec):
                if day in out:
                    raise ValueError(f"{day} is given opening hours twice")
                out[day] = span
        return out

    def calendar(self, timezone: str) -> Calendar:
        return Calendar(self.open, frozenset(self.holidays), timezone)


class WrapupWait(_Model):
    """How long after its hangup a call waits for the agent's wrap-up code when a rule
    matches on it (``match.wrapup``) and nothing else stops that rule; then the rules decide
    without the code (agent.loop.wrapups)."""

    wait: Duration = timedelta(seconds=60)

    @field_validator("wait")
    @classmethod
    def _bounded(cls, v: timedelta) -> timedelta:
        if not timedelta(0) < v <= timedelta(hours=1):
            raise ValueError("wrapup.wait must be more than 0s and at most 1h")
        return v


class Recordings(_Model):
    """``{{ recording_link }}``: a tracked link to a signed URL of the call's recording that
    expires after ``ttl``. The agent's web checks the signature and the time, then serves the
    file from ``dir`` (MixMonitor's directory) or redirects to ``url`` (``{file}`` and
    ``{call_id}`` filled in: recordings kept elsewhere). The HMAC key is ``secret``
    (``${ENV}``) or ``secret_file`` (read at load), else the agent's own, made at its first
    start beside the database; it is never shown or logged."""

    dir: NonEmpty | None = None
    url: Annotated[str, Field(pattern=r"^https?://\S*\{file\}\S*$")] | None = None
    secret: SecretStr | None = None
    secret_file: NonEmpty | None = None
    ttl: Duration = timedelta(days=7)
    # The key signing with: configured, else a random one until the agent gives its own
    # (check and explain never show a signed URL, so theirs needs no persistence).
    _key: bytes = PrivateAttr(default=b"")
    _own_key: bool = PrivateAttr(default=False)
    _off: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _one_each(self) -> Recordings:
        if (self.dir is None) == (self.url is None):
            raise ValueError("recordings needs one of dir (served by the agent) or url")
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("recordings takes secret or secret_file, not both")
        if not timedelta(minutes=1) <= self.ttl <= timedelta(days=90):
            raise ValueError("recordings.ttl must be between 1m and 90d")
        if self.secret is not None:
            key = self.secret.get_secret_value().encode()
        elif self.secret_file is not None:
            try:
                with open(self.secret_file, "rb") as fh:
                    key = fh.read(4096).strip()
            except OSError as exc:
                raise ValueError(f"recordings.secret_file: cannot read it ({exc.strerror})"
                                 ) from None
        else:
            key, self._own_key = secrets.token_bytes(32), True
        if len(key) < MIN_SECRET:
            raise ValueError(f"the recordings secret must be at least {MIN_SECRET} bytes")
        self._key = key
        return self

    @property
    def needs_agent_key(self) -> bool:
        """No key configured: the running agent gives its own (``use_agent_key``)."""
        return self._own_key

    def use_agent_key(self, key: bytes | None) -> None:
        """The running agent's own key; None: it has none to give (links are left out)."""
        if key is not None and len(key) < MIN_SECRET:
            raise ValueError(f"the recordings secret must be at least {MIN_SECRET} bytes")
        self._key, self._off = key or b"", key is None

    @property
    def on(self) -> bool:
        """False when the agent could not settle a key: texts leave the link out."""
        return not self._off

    def signer(self, public_base: str) -> RecordingSigner:
        return RecordingSigner(self._key, public_base, self.ttl)


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
    dnd: Dnd = Dnd()
    # The language of texts when nothing says otherwise, and per caller country (rules/language.py).
    language: LangTag = "en"
    language_by_country: dict[Region, LangTag] = {}
    spend: Spend = Spend()
    business_hours: BusinessHours | None = None
    wrapup: WrapupWait = WrapupWait()
    recordings: Recordings | None = None

    @model_validator(mode="after")
    def _spend_is_priced(self) -> Defaults:
        sp = self.spend
        if (sp.prices or sp.daily is not None or sp.monthly is not None) and not self.currency:
            raise ValueError("spend needs defaults.currency (prices and caps are in it)")
        if (sp.daily is not None or sp.monthly is not None) and not (
                sp.prices or self.price_per_segment is not None):
            raise ValueError("a spend cap needs prices (spend.prices or price_per_segment)")
        return self

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
            transactional_bypasses_dnd=self.dnd.transactional == "send",
            spend=SpendPolicy.build(
                self.spend.prices, currency=self.currency, fallback=self.price_per_segment,
                caps=Caps(self.spend.daily, self.spend.monthly), timezone=self.timezone),
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
    # The text as registered on DLT, {#var#} for each variable: check verifies the template
    # renders to it.
    dlt_text: NonEmpty | None = None
    language: LangTag | None = None  # of this text; default: defaults.language
    # The same message in other languages: language -> template (rules/language.py).
    languages: dict[LangTag, NonEmpty] = {}
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
    # The agent's wrap-up code, any of (case-blind); the call waits for it (WrapupWait).
    wrapup: StrList | None = None


class Send(_Model):
    to: StrList = ("caller",)  # caller | agent | both | numbers, or a list of them
    template: NonEmpty
    gateway: NonEmpty | None = None
    sender_id: NonEmpty | None = None
    # Later than at once: this long after the call, then (next_open) when the business opens.
    delay: Duration | None = None
    at: Literal["next_open"] | None = None


class Unless(_Model):
    """What cancels a scheduled text before it goes."""

    # A newer answered call from the same number (the "sorry we missed you" is moot).
    called_again: bool = False


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
    # A rendered text over its template's max_segments (caller values that force UCS-2 or run
    # long): suppress it (reason too_long, after trying without the caller's non-GSM
    # characters and then without their values), send it as it is, or truncate it to fit.
    over_segments: Literal["suppress", "send", "truncate"] = "suppress"
    # This rule's own spend caps (defaults.currency), beside defaults.spend's for all texts.
    spend: SpendCaps | None = None
    unless: Unless | None = None
    # This rule's own wait for the wrap-up code (default: defaults.wrapup).
    wrapup: WrapupWait | None = None


# The gateways' models belong to their drivers (agent.gateways.config); rules.yaml is checked
# against the same objects the agent runs with.
SmppGateway = SmppConfig
HttpGateway = HttpConfig
Gateway = GatewayConfig


class KeywordAction(_Model):
    """``opt_out``/``opt_in``/``help``, ``{language: hi}`` (the number's texts in that
    language from then on) or ``{tag: ..., reply: template}``; all may reply (``help``
    without one answers with ``replies.help``)."""

    action: Literal["opt_out", "opt_in", "help", "language", "tag"] = "tag"
    tag: NonEmpty | None = None
    reply: NonEmpty | None = None
    language: LangTag | None = None  # ``{language: hi}``: texts to this number in Hindi

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("opt_out", "opt_in", "help"):
                raise ValueError(
                    f"expected opt_out, opt_in, help or {{tag, reply}}, not {value!r}")
            return {"action": value}
        if isinstance(value, dict) and "language" in value and "action" not in value:
            return {**value, "action": "language"}
        return value

    @model_validator(mode="after")
    def _needs_tag(self) -> KeywordAction:
        if self.action == "language" and self.language is None:
            raise ValueError("a language keyword needs the language, e.g. {language: hi}")
        if self.action == "tag" and self.tag is None:
            raise ValueError("a keyword action needs a tag (or is opt_out / opt_in / help)")
        return self


class Replies(_Model):
    keywords: dict[Annotated[str, Field(pattern=r"^\S+$")], KeywordAction] = {}
    sentiment: bool = False
    #: The template that answers HELP and INFO (and any keyword whose action is ``help``).
    help: NonEmpty | None = None


class Pbx(_Model):
    """How this PBX's channels are read (agent.calls.pbx): what detection cannot know."""

    #: Endpoints (``carrier1``) or interfaces (``PJSIP/carrier1``) that are trunks: calls they
    #: place are inbound, and a leg to them is the customer, never an agent.
    trunks: StrList = ()
    #: Endpoints that are phones, whatever their context or caller id.
    phones: StrList = ()
    #: First dialplan contexts (fnmatch patterns) of calls from carriers / from phones.
    inbound_contexts: StrList = ()
    internal_contexts: StrList = ()


class Retention(_Model):
    """How long the store keeps what (README "Retention"). ``details``: message texts, phone
    numbers, each message's state history, delivery receipts, call records and reply texts.
    ``aggregates``: the slim message rows the reports count (rule, gateway, state, times,
    segments, latency), links and clicks. Messages still in flight are never pruned."""

    details: Duration = timedelta(days=180)
    aggregates: Duration = timedelta(days=730)
    every: Duration = timedelta(minutes=10)  # how often the agent prunes
    batch: int = Field(default=50, ge=1, le=10_000)  # messages per write op (short ones)

    @model_validator(mode="after")
    def _order(self) -> Retention:
        if self.aggregates < self.details:
            raise ValueError("aggregates must be kept at least as long as details")
        if self.details < timedelta(days=1) or self.every < timedelta(seconds=10):
            raise ValueError("details must be kept at least 1d, and every must be at least 10s")
        return self


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
    pbx: dict[str, Any] | None = None
    pbxes: list[Any] | None = None
    retention: dict[str, Any] | None = None

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
    gateways: dict[str, SmppConfig | HttpConfig]
    replies: Replies = Replies()
    pbx: Pbx = Pbx()
    #: The PBXs this agent watches (agent.ami.config); empty: the one its settings name.
    pbxes: tuple[PbxLinkConfig, ...] = ()
    retention: Retention = Retention()
