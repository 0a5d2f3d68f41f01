"""rules.yaml's defaults: section: region and timezone, quiet and business hours, rate limits,
spend, DND, untrusted caller data, wrap-up waits, recordings, and the agents' directory."""

from __future__ import annotations

import re
import secrets
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from agent.scalars import Duration, NonEmpty, parse_duration
from agent.rules.schedule import Calendar
from agent.sms.numbers import is_region
from agent.sms.policy import AudienceLimits, Limits
from agent.sms.recording import MIN_SECRET, RecordingSigner
from agent.sms.policy import RateLimit as PolicyRate
from agent.sms.spend import Caps, SpendPolicy
from agent.sms.untrusted import DEFAULT_MAX_LENGTH, UntrustedPolicy
from agent.rules.fields import (
    parse_clock,
    listify,
    parse_days,
    Clock,
    LangTag,
    Timezone,
    Region,
    StrList,
    Model,
)


class RateLimit(Model):
    count: int
    per: timedelta

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            count, sep, per = value.partition("/")
            n = count.strip()
            if not sep or not (n.isascii() and n.isdigit()) or int(n) < 1:
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


class AgentRateLimits(Model):
    """Texts to agents' mobiles, counted apart from callers' (a pumping burst that spends the
    callers' budget must not silence the agents' summaries)."""

    per_number: OptionalRate = _rate(100, 3600)
    global_: OptionalRate = Field(default=_rate(200, 60), alias="global")
    daily: OptionalRate = _rate(5000, 86400)


class RateLimits(Model):
    """Texts to callers (and fixed numbers). Defaults are on: ``off`` turns one off."""

    per_number: OptionalRate = _rate(3, 3600)
    global_: OptionalRate = Field(default=_rate(100, 60), alias="global")
    daily: OptionalRate = _rate(2000, 86400)
    agents: AgentRateLimits = AgentRateLimits()


def _countries(value: Any) -> Any:
    items = listify(value)
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


class QuietHours(Model):
    from_: Clock = Field(alias="from")
    to: Clock
    action: Literal["defer", "drop", "send"] = "defer"


class QuietHoursOverride(Model):
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


class Untrusted(Model):
    """Values a caller controls (caller_name, caller, and these channel variables): cleaned,
    cut to ``max_length`` and refused when they carry a URL (agent.sms.untrusted)."""

    max_length: int = Field(default=DEFAULT_MAX_LENGTH, ge=1, le=160)
    vars: StrList = ()


class Dnd(Model):
    """Numbers on the DND (do-not-disturb) list. Promotional texts never reach them; whether
    transactional ones may is the operator's registration's call (India's TRAI lets a
    registered transactional route through), so the default is to suppress."""

    transactional: Literal["send", "suppress"] = "suppress"


Money = Annotated[Decimal, Field(ge=0)]
#: A destination prefix ("+91", "+9198") or "default" (any other number on that gateway).
Prefix = Annotated[str, Field(pattern=r"^(default|\+\d{1,15})$")]


class SpendCaps(Model):
    """At most this much (defaults.currency) per local day / month."""

    daily: Money | None = None
    monthly: Money | None = None

    def caps(self) -> Caps:
        return Caps(self.daily, self.monthly)


class Spend(Model):
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


class BusinessHours(Model):
    """When the business is open (``at: next_open``): weekdays or ranges -> HH:MM-HH:MM in
    defaults.timezone, and holidays (YYYY-MM-DD) closed all day."""

    open: dict[str, Annotated[tuple[time, time], BeforeValidator(_hours)]]
    holidays: tuple[date, ...] = ()

    @field_validator("open")
    @classmethod
    def _days(cls, v: dict[str, tuple[time, time]]) -> dict[str, tuple[time, time]]:
        out: dict[str, tuple[time, time]] = {}
        for spec, span in v.items():
            for day in parse_days(spec):
                if day in out:
                    raise ValueError(f"{day} is given opening hours twice")
                out[day] = span
        return out

    def calendar(self, timezone: str) -> Calendar:
        return Calendar(self.open, frozenset(self.holidays), timezone)


class WrapupWait(Model):
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


class Recordings(Model):
    """``{{ recording_link }}``: a tracked link to a signed URL of the call's recording that
    expires after ``ttl``. The agent's web checks the signature and the time, then serves the
    file from ``dir`` (MixMonitor's directory) or redirects to ``url`` (``{file}``,
    ``{call_id}`` and ``{pbx}`` filled in: recordings kept elsewhere). The HMAC key is ``secret``
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


class Defaults(Model):
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


class Agent(Model):
    name: NonEmpty
    mobile: NonEmpty | None = None  # normalised to E.164 by the loader (needs defaults.region)

