"""rules.yaml's schema: strict pydantic models (extra keys refused): templates, rules, replies,
the pbx:, retention: and top-level sections; defaults: is in rules/defaults.py."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from agent.ami.config import PbxLinkConfig
from agent.gateways.config import GatewayConfig, HttpConfig, SmppConfig
from agent.scalars import Duration, NonEmpty
from agent.rules.fields import (
    listify,
    parse_days,
    Clock,
    LangTag,
    StrList,
    Model,
)
from agent.rules.defaults import (
    QuietHoursOverride,
    SpendCaps,
    WrapupWait,
    Defaults,
    Agent,
)


class Template(Model):
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


class VarMatch(Model):
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


class TimeWindow(Model):
    from_: Clock = Field(alias="from")
    to: Clock


CallerType = Literal["mobile", "landline", "anonymous", "international", "short_code", "invalid"]


class Match(Model):
    """Every condition present must hold; lists mean any of."""

    queue: StrList | None = None
    did: StrList | None = None
    agent: StrList | None = None
    tags: StrList | None = None
    direction: (
        Annotated[tuple[Literal["inbound", "outbound", "internal"], ...], BeforeValidator(listify)]
        | None
    ) = None
    disposition: (
        Annotated[
            tuple[Literal["answered", "missed", "abandoned", "busy", "failed", "voicemail"], ...],
            BeforeValidator(listify),
        ]
        | None
    ) = None
    hangup_by: (
        Annotated[tuple[Literal["caller", "agent", "system"], ...], BeforeValidator(listify)]
        | None
    ) = None
    caller_type: Annotated[tuple[CallerType, ...], BeforeValidator(listify)] | None = None
    min_talk: Duration | None = None
    max_talk: Duration | None = None
    min_wait: Duration | None = None
    max_wait: Duration | None = None
    time: TimeWindow | None = None
    days: Annotated[tuple[str, ...], BeforeValidator(parse_days)] | None = None
    vars: dict[str, VarMatch] | None = None
    # The agent's wrap-up code, any of (case-blind); the call waits for it (WrapupWait).
    wrapup: StrList | None = None


class Send(Model):
    to: StrList = ("caller",)  # caller | agent | both | numbers, or a list of them
    template: NonEmpty
    gateway: NonEmpty | None = None
    sender_id: NonEmpty | None = None
    # Later than at once: this long after the call, then (next_open) when the business opens.
    delay: Duration | None = None
    at: Literal["next_open"] | None = None


class Unless(Model):
    """What cancels a scheduled text before it goes."""

    # A newer answered call from the same number (the "sorry we missed you" is moot).
    called_again: bool = False


class Rule(Model):
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


class KeywordAction(Model):
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


class Replies(Model):
    keywords: dict[Annotated[str, Field(pattern=r"^\S+$")], KeywordAction] = {}
    sentiment: bool = False
    #: The template that answers HELP and INFO (and any keyword whose action is ``help``).
    help: NonEmpty | None = None


class Pbx(Model):
    """How this PBX's channels are read (agent.calls.pbx): what detection cannot know."""

    #: Endpoints (``carrier1``) or interfaces (``PJSIP/carrier1``, ``DAHDI/i1``), or fnmatch
    #: patterns of them (``DAHDI/*``, ``IAX2/site-*``), that are trunks: calls they place are
    #: inbound, and a leg to them is the customer, never an agent.
    trunks: StrList = ()
    #: Endpoints (the same forms) that are phones, whatever their context or caller id.
    phones: StrList = ()
    #: First dialplan contexts (fnmatch patterns) of calls from carriers / from phones.
    inbound_contexts: StrList = ()
    internal_contexts: StrList = ()
    #: The same, consulted only when detection does not know the endpoint (a guess, said so).
    fallback_inbound_contexts: StrList = ()
    fallback_internal_contexts: StrList = ()


class Retention(Model):
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


class TopLevel(Model):
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


class RulesConfig(Model):
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
