"""HTTP gateway configuration and the pure pieces every preset shares (requests, tokens, masking)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from yarl import URL

from agent.errors import (
    ConfigError,
    GatewayAmbiguousError,
    GatewayPermanentError,
    GatewayTemporaryError,
    redacted,
)
from agent.scalars import DltChain, parse_duration


class Preset(enum.StrEnum):
    KANNEL = "kannel"
    JASMIN = "jasmin"
    TWILIO = "twilio"
    GENERIC = "generic"


# Placeholders a generic request template may use; anything else is refused at load.
TEMPLATE_FIELDS = frozenset(
    {"to", "to_digits", "sender", "text", "message_id", "callback_url", "dlt_template_id",
     "dlt_entity_id", "dlt_chain_id", "encoding"}
)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# Query keys whose values are secrets wherever they appear in a URL we might log.
_SECRET_KEYS = frozenset(
    {"password", "pass", "pwd", "passwd", "token", "auth_token", "secret", "api_key", "apikey",
     "key", "t", "signature", "sig"}
)

DEFAULT_RECEIPT_FIELDS: dict[str, str] = {
    "message_id": "reference", "smsc_id": "id", "status": "status", "error_code": "error",
}
DEFAULT_INBOUND_FIELDS: dict[str, str] = {"sender": "from", "recipient": "to", "text": "text"}
DEFAULT_STATUS_MAP: dict[str, str] = {
    "delivered": "delivered", "undelivered": "undelivered", "failed": "undelivered",
    "expired": "expired", "rejected": "rejected", "accepted": "accepted", "sent": "accepted",
    "queued": "accepted", "enroute": "accepted", "unknown": "unknown",
}


def _seconds(value: Any) -> Any:
    """A duration from rules.yaml ("5s", "2m", "1.5") as seconds."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return parse_duration(value).total_seconds()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


#: At most a day: "inf" or 1e308 passed gt=0 and made a timeout that never fires.
Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=86_400)]

# Keys each preset reads; any other preset-specific key set in rules.yaml is refused rather
# than silently ignored. Keys every preset reads are not listed.
_PRESET_KEYS: dict[Preset, frozenset[str]] = {
    Preset.KANNEL: frozenset({"username", "password", "strip_plus", "dlt_tlvs", "dlt_chain_id"}),
    Preset.JASMIN: frozenset({"username", "password", "strip_plus", "dlt_tlvs", "dlt_chain_id"}),
    Preset.TWILIO: frozenset({"account_sid", "auth_token"}),
    Preset.GENERIC: frozenset({"username", "password", "method", "request_template",
                               "response_id_path", "headers", "receipt_fields",
                               "inbound_fields", "status_map", "signature_header",
                               "signature_tolerance", "dlt_chain_id"}),
}
_ALL_PRESET_KEYS = frozenset().union(*_PRESET_KEYS.values())

DEFAULT_URLS: dict[Preset, str] = {Preset.TWILIO: "https://api.twilio.com"}


class HttpGatewayConfig(BaseModel):
    """One HTTP SMS gateway, as written under ``gateways:`` in rules.yaml (``type: http``) and
    as the driver runs it: ``aftercall check`` and ``aftercall run`` validate the same model.

    ``url`` is the send endpoint (for Twilio: the API base, https://api.twilio.com by default).
    ``name`` and ``callback_base`` (the agent's public URL as the gateway must reach it) are
    filled in when the gateway is built; receipts and replies come back under
    ``{callback_base}/webhooks/{name}/``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http"] = "http"
    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    preset: Preset = Preset.GENERIC
    url: str | None = None
    method: Literal["GET", "POST"] | None = None  # generic only; default POST (JSON body)
    username: str | None = None
    password: SecretStr | None = None
    account_sid: str | None = None
    auth_token: SecretStr | None = None
    callback_base: str | None = None
    webhook_secret: SecretStr | None = None
    timeout: Seconds = 10.0  # waiting for the response, once sent
    connect_timeout: Seconds = 5.0
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff: tuple[Seconds, Seconds] = (0.5, 10.0)  # (initial, cap) seconds, doubled per retry
    keepalive_timeout: Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=86_400)] = 5.0
    tps: float | None = Field(default=None, gt=0)  # submits per second, paced by the driver
    backup: str | None = Field(default=None, min_length=1)
    strip_plus: bool = False  # send "9198..." instead of "+9198..." (some Kannel/SMSC routes)
    extra_params: dict[str, str] = Field(default_factory=dict)  # e.g. Kannel "smsc", Jasmin "priority"
    # India DLT ids as SMPP TLVs behind an HTTP gateway. Kannel: the names of the smpp-tlv
    # groups in kannel.conf (sent as meta-data "?smpp?NAME=value"); Jasmin: the TLV tags
    # (sent as custom_tlvs). Keys: dlt_entity_id, dlt_template_id.
    dlt_tlvs: dict[Literal["dlt_entity_id", "dlt_template_id", "dlt_chain_id"], str] = Field(
        default_factory=dict)
    # India DLT PE-TM chain sent with every text: Kannel as meta-data (dlt_tlvs.dlt_chain_id
    # names its smpp-tlv group), Jasmin as a custom TLV (tag 0x1402 unless dlt_tlvs says),
    # the generic preset as the {dlt_chain_id} placeholder. Twilio registers DLT itself.
    dlt_chain_id: DltChain | None = None
    # generic preset
    request_template: dict[str, Any] | None = None
    response_id_path: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    receipt_fields: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RECEIPT_FIELDS))
    inbound_fields: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_INBOUND_FIELDS))
    status_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    signature_header: str = "X-Signature"
    signature_tolerance: Seconds = 300.0
    # Peer addresses or networks webhooks may come from (empty: any). See gateways.webhooks.
    allowed_sources: tuple[str, ...] = ()

    @field_validator("allowed_sources")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for n in v:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"{n!r} is not an IP address or network") from None
        return v

    @field_validator("url", "callback_base")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = URL(v)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if u.password or any(k.lower() in _SECRET_KEYS for k in u.query):
            raise ValueError("must not carry credentials; use username/password fields")
        return v.rstrip("/")

    @field_validator("backoff")
    @classmethod
    def _backoff(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("must be (initial, cap) with 0 < initial <= cap")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url") is None:
            default = DEFAULT_URLS.get(data.get("preset", Preset.GENERIC))  # type: ignore[call-overload]
            if default:
                data = {**data, "url": default}
        return data

    @model_validator(mode="after")
    def _preset_fields(self) -> HttpGatewayConfig:
        fields = type(self).model_fields
        foreign = sorted(
            k for k in (self.model_fields_set & _ALL_PRESET_KEYS) - _PRESET_KEYS[self.preset]
            if getattr(self, k) != fields[k].get_default(call_default_factory=True))
        if foreign:
            raise ValueError(
                f"preset {self.preset.value} does not use {', '.join(foreign)} "
                f"(it reads {', '.join(sorted(_PRESET_KEYS[self.preset]))})"
            )
        missing: list[str] = [] if self.url else ["url"]
        if self.preset in (Preset.KANNEL, Preset.JASMIN):
            missing += [f for f in ("username", "password") if getattr(self, f) is None]
        elif self.preset is Preset.TWILIO:
            missing += [f for f in ("account_sid", "auth_token") if getattr(self, f) is None]
        elif self.preset is Preset.GENERIC:
            if not self.request_template:
                missing.append("request_template")
            else:
                bad = sorted(_template_placeholders(self.request_template) - TEMPLATE_FIELDS)
                if bad:
                    raise ValueError(
                        f"request_template: unknown placeholder(s) {bad}; "
                        f"use {sorted(TEMPLATE_FIELDS)}"
                    )
                if self.method == "GET" and any(
                        not isinstance(v, str) for v in self.request_template.values()):
                    raise ValueError("request_template: with method GET every value must be "
                                     "a string (it becomes one query parameter)")
            unknown_states = {v for v in self.status_map.values()} - {
                "delivered", "undelivered", "expired", "rejected", "accepted", "unknown"}
            if unknown_states:
                raise ValueError(f"status_map: unknown receipt state(s) {sorted(unknown_states)}")
        if (self.preset is Preset.KANNEL and self.dlt_chain_id
                and "dlt_chain_id" not in self.dlt_tlvs):
            raise ValueError("dlt_chain_id needs dlt_tlvs.dlt_chain_id: the name of its "
                             "smpp-tlv group in kannel.conf (tag 0x1402 on most Indian SMSCs)")
        if (self.preset is Preset.GENERIC and self.dlt_chain_id and self.request_template
                and "dlt_chain_id" not in _template_placeholders(self.request_template)):
            raise ValueError("dlt_chain_id: request_template has no {dlt_chain_id} placeholder")
        if self.preset is Preset.JASMIN:
            for key, tag in self.dlt_tlvs.items():
                try:
                    ok = 0 <= int(tag, 0) <= 0xFFFF
                except ValueError:
                    ok = False
                if not ok:
                    raise ValueError(f"dlt_tlvs.{key}: Jasmin needs the TLV tag as a number "
                                     f"such as 0x1400, not {tag!r}")
        if missing:
            raise ValueError(f"preset {self.preset.value} needs {', '.join(missing)}")
        if (self.callback_base and self.preset is not Preset.TWILIO
                and self.webhook_secret is None):
            # Without a secret nothing would tell a forged receipt from a real one.
            raise ValueError(
                f"preset {self.preset.value} with callback_base needs webhook_secret "
                "to authenticate receipts and replies"
            )
        return self

    def bound(self, name: str, callback_base: str | None,
              webhook_secret: Callable[[], str]) -> HttpGatewayConfig:
        """This configuration as the running gateway ``name`` uses it: its callbacks come back
        to ``callback_base`` (unless rules.yaml set one), signed with ``webhook_secret``
        (unless rules.yaml set one)."""
        data = self.model_dump(exclude_unset=True, exclude={"name", "callback_base"})
        for key in ("password", "auth_token", "webhook_secret"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.headers:
            data["headers"] = dict(self.headers)
        if "webhook_secret" not in data:
            data["webhook_secret"] = SecretStr(webhook_secret())
        try:
            return HttpGatewayConfig(name=name, callback_base=self.callback_base or callback_base,
                                     **data)
        except ValidationError as exc:  # its str() would print the URL and secrets given
            raise ConfigError(f"gateway {name}: {redacted(exc)}") from None

    @property
    def endpoint(self) -> str:
        """The send URL (always set once validated: given, or the preset's default)."""
        assert self.url is not None
        return self.url

    def secret(self) -> bytes:
        """The key callbacks are authenticated with (Twilio: the auth token)."""
        s = self.auth_token if self.preset is Preset.TWILIO else self.webhook_secret
        if s is None:
            raise ValueError(f"gateway {self.name}: no webhook secret configured")
        return s.get_secret_value().encode()

    def receipt_url(self, message_id: str, **extra: str) -> str | None:
        """Where this gateway must send receipts for one of our messages."""
        if not self.callback_base:
            return None
        q: dict[str, str] = {"mid": message_id}
        if self.preset in (Preset.KANNEL, Preset.JASMIN):
            q["t"] = callback_token(self.secret(), "receipt", self.name, message_id)
        q.update(extra)
        return str(URL(f"{self.callback_base}/webhooks/{self.name}/receipt").with_query(q))

    def inbound_url(self) -> str | None:
        """The MO URL to configure on the gateway (Kannel sms-service get-url, Jasmin HTTP
        connector baseurl, Twilio messaging webhook, generic)."""
        if not self.callback_base:
            return None
        u = URL(f"{self.callback_base}/webhooks/{self.name}/inbound")
        if self.preset in (Preset.KANNEL, Preset.JASMIN):
            u = u.with_query({"t": callback_token(self.secret(), "inbound", self.name, "")})
        return str(u)


def _template_placeholders(node: Any) -> set[str]:
    if isinstance(node, str):
        return set(_PLACEHOLDER.findall(node))
    if isinstance(node, Mapping):
        return set().union(*(_template_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_template_placeholders(v) for v in node)) if node else set()
    return set()


def render_template(node: Any, values: Mapping[str, str]) -> Any:
    """Substitute ``{field}`` placeholders inside a JSON-shaped template. A string that is
    exactly one placeholder keeps the value's type (None stays null)."""
    if isinstance(node, str):
        m = _PLACEHOLDER.fullmatch(node)
        if m:
            return values.get(m.group(1))
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1)) or ""), node)
    if isinstance(node, Mapping):
        return {k: render_template(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [render_template(v, values) for v in node]
    return node


def callback_token(secret: bytes, purpose: str, gateway: str, message_id: str) -> str:
    """HMAC-SHA256 token put in callback URLs for gateways that do not sign their callbacks.
    Bound to purpose and gateway so a receipt token cannot authenticate a reply."""
    msg = f"{purpose}\x00{gateway}\x00{message_id}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def mask_url(url: str | URL) -> str:
    """The URL with credentials replaced by ``***``: safe for logs and error text."""
    u = URL(url) if isinstance(url, str) else url
    if u.password is not None:
        u = u.with_password("***")
    if u.query:
        u = u.with_query([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in u.query.items()])
    return str(u)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request a preset wants sent. ``form`` is urlencoded, ``json`` is a JSON body."""

    method: Literal["GET", "POST"]
    url: str
    query: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None


def http_reason(status: int) -> str:
    if status == 429:
        return "throttled"
    if status in (401, 403):
        return "auth_failed"
    if status == 404:
        return "not_found"
    if status >= 500:
        return "server_error"
    return "rejected"


def error_for_status(
    gateway: str, status: int, detail: str, *, code: int | str | None = None,
    reason: str | None = None,
) -> GatewayPermanentError | GatewayTemporaryError | GatewayAmbiguousError:
    """The error a non-2xx response means. 504 is ambiguous: a proxy gave up waiting for an
    upstream that may well have taken the message."""
    detail = detail.strip().replace("\n", " ")[:200]
    msg = f"gateway {gateway}: HTTP {status}: {detail}" if detail else f"gateway {gateway}: HTTP {status}"
    kw: dict[str, Any] = {"code": code if code is not None else status,
                          "reason": reason or http_reason(status)}
    if status == 504:
        return GatewayAmbiguousError(msg, **kw)
    if status in (408, 425, 429) or status >= 500:
        return GatewayTemporaryError(msg, **kw)
    return GatewayPermanentError(msg, **kw)


def format_number(number: str, strip_plus: bool) -> str:
    return number[1:] if strip_plus and number.startswith("+") else number
