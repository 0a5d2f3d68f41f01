"""The templates' language: sandboxed Jinja2 with strict merge tags, its filters, caller-controlled
values as templates see them, and rendering that never gives a partial text."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import TemplateError

from agent.errors import AftercallError
from agent.models import CallRecord
from agent.rules.sandbox import BoundedSandbox, bounded_render
from agent.sms.numbers import mask as mask_number
from agent.sms.untrusted import (
    UntrustedPolicy,
    clean,
    gsm_only,
)

LinkFactory = Callable[[str], str]


#: Merge tags: every CallRecord field, plus ``now``; ``vars.NAME`` for channel variables.
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CallRecord))


#: ``recording_link``: a tracked short link to a signed, expiring URL of the call's recording
#: (agent.sms.recording); undefined when the call has no recording.
MERGE_TAGS: frozenset[str] = frozenset(RECORD_FIELDS) | {"now", "recording_link"}


FUNCTIONS: frozenset[str] = frozenset({"link"})


_JINJA_GLOBALS = ("range", "dict", "namespace", "joiner", "cycler")


DATETIME_FIELDS = ("started_at", "answered_at", "ended_at")


_UNDEFINED = re.compile(r"^'(\w+)' is undefined$")


class TemplateRenderError(AftercallError):
    """A template could not be rendered for a call (a missing value, a bad filter argument);
    the message is suppressed as ``template_error`` with ``reason`` as the detail."""

    def __init__(self, template: str, reason: str):
        self.template = template
        self.reason = reason
        super().__init__(f"template {template}: {reason}")


class TemplateProblem(ValueError):
    """A template is wrong at load time; ``line`` is 1-based inside the template text."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


class Vars:
    """Channel variables as seen by templates: ``vars.TICKET``; a missing or empty one is
    undefined, so ``default()`` applies and a bare use fails instead of leaving a hole."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        self._values = {k: v for k, v in values.items() if v not in ("", None)}

    def _get(self, key: str) -> Any:
        return self._values.get(key)

    def __getitem__(self, key: str) -> Any:
        value = self._get(key)
        if value is None:
            return StrictUndefined(hint=f"vars.{key} is missing for this call", name=f"vars.{key}")
        return value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and not isinstance(self._get(key), Undefined | None)

    def __iter__(self) -> Any:
        # Without this Python would iterate through __getitem__(0), (1), ... which never ends.
        raise TypeError("vars cannot be listed: name each variable, vars.NAME")


class TooLongError(TemplateRenderError):
    """The text for this call needs more segments than the template's max_segments: the
    message is suppressed as ``too_long``."""


class Untrusted(str):
    """A caller-controlled value, cleaned; ``raw`` is what ``| trusted`` gives back."""

    raw: str

    def __new__(cls, value: str, raw: str) -> Untrusted:
        obj = super().__new__(cls, value)
        obj.raw = raw
        return obj


class Refused(StrictUndefined):
    """A caller-controlled value refused (a URL in a name, say): missing to the template, so
    ``default()`` applies, yet ``| trusted`` still reaches it."""

    __slots__ = ("raw",)

    def __init__(self, name: str, raw: str, why: str) -> None:
        super().__init__(hint=f"{name} was refused: {why}", name=name)
        self.raw = raw


Level = Literal["clean", "gsm", "drop"]


def untrusted_value(name: str, value: str, policy: UntrustedPolicy, level: Level) -> Any:
    c = clean(value, max_length=policy.max_length, name=name == "caller_name")
    if c.value is None:
        return Refused(name, c.trusted, c.refused or "empty")
    if level == "drop":
        return Refused(name, c.trusted, "the text would exceed max_segments with it")
    if level == "gsm":
        kept = gsm_only(c.value)
        if kept is None:
            return Refused(name, c.trusted, "not GSM-7 and the text would exceed max_segments")
        return Untrusted(kept, c.trusted)
    return Untrusted(c.value, c.trusted)


def strict(value: Any) -> None:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the missing tag


def _fmt(default: str) -> Callable[..., str]:
    def render(value: Any, fmt: str = default) -> str:
        strict(value)
        if not isinstance(value, datetime):
            kind = "str" if isinstance(value, str) else type(value).__name__
            raise TypeError(f"needs a date/time, got {kind}")
        return value.strftime(fmt)

    return render


def _last(value: Any, n: int = 4) -> str:
    strict(value)
    digits = re.sub(r"\D", "", str(value))
    return digits[-n:] if n > 0 else ""


def _mask(value: Any, keep: int = 4) -> str:
    strict(value)
    return mask_number(str(value), keep)


def _trusted(value: Any) -> Any:
    """``{{ caller_name | trusted }}``: the caller's value with only invisible characters
    removed, not cut and not refused. The template's author vouches for where it goes."""
    if isinstance(value, Untrusted | Refused):
        return value.raw
    strict(value)
    return value


def _environment() -> BoundedSandbox:
    env = BoundedSandbox(
        undefined=StrictUndefined,
        autoescape=False,  # plain text: an SMS has no markup to escape
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals = {k: v for k, v in env.globals.items() if k in _JINJA_GLOBALS}
    env.filters.update(
        datetime=_fmt("%d %b %Y %H:%M"),
        date=_fmt("%d %b %Y"),
        time=_fmt("%H:%M"),
        last=_last,
        mask=_mask,
        trusted=_trusted,
    )
    env.bound_filters()
    return env


ENV = _environment()


def render(name: str, template: Template, context: Mapping[str, Any]) -> str:
    try:
        text = bounded_render(template, context).strip()
    except TemplateError as exc:
        reason = exc.message or type(exc).__name__
        raise TemplateRenderError(
            name, _UNDEFINED.sub(r"\1 is missing for this call", reason)
        ) from None
    except Exception as exc:  # noqa: BLE001 - a template is code the operator wrote: whatever it
        # raises ({{ queue|dictsort }} is an AttributeError) is this call's template_error
        raise TemplateRenderError(name, f"{type(exc).__name__}: {exc}") from None
    if not text:
        raise TemplateRenderError(name, "rendered to an empty message")
    return text
