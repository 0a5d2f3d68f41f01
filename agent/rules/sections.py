"""rules.yaml's sections, each validated on its own against its model, with the references
between them (templates, gateways) checked on the raw data: every problem at its file:line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from yaml.error import Mark

from agent.ami.config import PbxLinkConfig
from agent.errors import ConfigError
from agent.rules import defaults as defaults_schema
from agent.rules import schema
from agent.rules.templates import CompiledTemplate, TemplateProblem, compile_template
from agent.settings import read_secret_file
from agent.rules.yamldoc import Document, KeyPath
from agent.sms.numbers import classify, is_region
from agent.sms.untrusted import UntrustedPolicy

_RECIPIENTS = frozenset({"caller", "agent", "both"})
_GATEWAY_ADAPTER: TypeAdapter[Any] = TypeAdapter(schema.Gateway)


def _resolve(data: Any, loc: Iterable[str | int]) -> tuple[KeyPath, list[str | int]]:
    """Map a pydantic error location onto the data: union/discriminator tags in ``loc`` that
    are not keys of the data are dropped. Returns the existing path and the rest."""
    path: list[str | int] = []
    rest: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            path.append(part)
        else:
            rest.append(part)
    return tuple(path), rest


def validate(
    doc: Document, model: type[BaseModel] | TypeAdapter[Any], data: Any, prefix: KeyPath
) -> Any | None:
    """``data`` (found at ``prefix``) as ``model``, or None with each error put in ``doc`` at
    the line of the key it is about."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            path, rest = _resolve(data, err["loc"])
            full = (*prefix, *path)
            msg = err["msg"].removeprefix("Value error, ")  # doc.problem hides secrets
            if err["type"] == "extra_forbidden":
                doc.at(full, f"unknown key {path[-1]!r}" if path else msg, key=True)
            elif err["type"] == "missing" and rest:
                doc.at((*full, rest[-1]), f"missing required key {rest[-1]!r}")
            elif err["type"] == "union_tag_not_found":
                doc.at(full, "missing required key 'type' (smpp or http)")
            elif err["type"] == "union_tag_invalid":
                doc.at((*full, "type"), msg)
            else:
                doc.at(full, msg)
        return None


def _get(raw: Any, *keys: str) -> Any:
    """A value from raw (unvalidated) data, or None: cross-references are checked on the raw
    tree so that an entry with an unrelated mistake still gets its references checked."""
    for key in keys:
        if not isinstance(raw, dict):
            return None
        raw = raw.get(key)
    return raw


def _template_mark(doc: Document, text: str, path: KeyPath, line: int | None) -> Mark | None:
    mark = doc.values.get(path)
    if mark is None or line is None:
        return mark
    if path not in doc.block:
        return Mark(mark.name, 0, mark.line + line - 1, mark.column if line == 1 else 0, None, None)
    # A block scalar's text starts on the line after its | or > indicator.
    row = mark.line + line
    lines = text.splitlines()
    source = lines[row] if row < len(lines) else ""
    return Mark(mark.name, 0, row, len(source) - len(source.lstrip(" ")), None, None)


class Sections:
    """Validates each section of the outline on its own, collecting problems in ``doc``."""

    def __init__(self, doc: Document, data: dict[str, Any], text: str):
        self.doc = doc
        self.data = data
        self.text = text
        self.raw_templates: dict[str, Any] = self._raw("templates", dict) or {}
        self.raw_gateways: dict[str, Any] = self._raw("gateways", dict) or {}
        self.region: str | None = None
        self.has_hours = False  # defaults.business_hours given (at: next_open needs it)

    def _raw(self, name: str, kind: type) -> Any:
        value = self.data.get(name)
        return value if isinstance(value, kind) else None

    def need_gateway(self, ref: Any, path: KeyPath) -> None:
        if isinstance(ref, str) and self.raw_gateways and ref not in self.raw_gateways:
            self.doc.at(path, f"unknown gateway {ref!r}; defined: {', '.join(self.raw_gateways)}")

    def need_template(self, ref: Any, path: KeyPath) -> None:
        if isinstance(ref, str) and ref not in self.raw_templates:
            known = ", ".join(self.raw_templates) or "none"
            self.doc.at(path, f"unknown template {ref!r}; defined: {known}")

    def defaults(self) -> defaults_schema.Defaults | None:
        raw = self._raw("defaults", dict)
        # An empty mapping too: it lacks required keys, and must say so.
        defaults = (
            validate(self.doc, defaults_schema.Defaults, raw, ("defaults",)) if raw is not None else None
        )
        region = str(_get(raw, "region") or "").upper()
        self.region = defaults.region if defaults else (region if is_region(region) else None)
        self.need_gateway(_get(raw, "gateway"), ("defaults", "gateway"))
        self.has_hours = _get(raw, "business_hours") is not None
        prices = _get(raw, "spend", "prices")
        for gw in prices if isinstance(prices, dict) else ():
            self.need_gateway(gw, ("defaults", "spend", "prices", gw))
        return defaults

    def agents(self) -> dict[str, defaults_schema.Agent]:
        agents: dict[str, defaults_schema.Agent] = {}
        for ext, raw in (self._raw("agents", dict) or {}).items():
            agent = validate(self.doc, defaults_schema.Agent, raw, ("agents", ext))
            if agent is None:
                continue
            if agent.mobile is not None and self.region is not None:
                info = classify(agent.mobile, self.region)
                if info.e164 is None:
                    self.doc.at(
                        ("agents", ext, "mobile"), f"not a usable mobile number ({info.detail})"
                    )
                    continue
                agent = agent.model_copy(update={"mobile": info.e164})
            agents[ext] = agent
        return agents

    def templates(
        self, defaults: defaults_schema.Defaults | None
    ) -> tuple[dict[str, schema.Template], dict[str, CompiledTemplate]]:
        tz = defaults.timezone if defaults else "UTC"
        base_url = defaults.public_base_url if defaults else None
        untrusted = defaults.untrusted_policy() if defaults else UntrustedPolicy()
        templates: dict[str, schema.Template] = {}
        compiled: dict[str, CompiledTemplate] = {}
        for name, raw in self.raw_templates.items():
            tpl = validate(self.doc, schema.Template, raw, ("templates", name))
            variants = _get(raw, "languages")
            for lang, variant in (variants if isinstance(variants, dict) else {}).items():
                self.need_template(variant, ("templates", name, "languages", lang))
            if tpl is None:
                continue
            templates[name] = tpl
            path: KeyPath = ("templates", name, "text")
            try:
                ct = compile_template(name, tpl.text, timezone=tz, public_base_url=base_url,
                                      untrusted=untrusted,
                                      recordings=bool(defaults and defaults.recordings))
            except TemplateProblem as exc:
                self.doc.problem(
                    _template_mark(self.doc, self.text, path, exc.line), path, str(exc)
                )
                continue
            info = ct.worst.info
            if info.segments > tpl.max_segments:
                forced = "".join(info.forcing_chars)
                self.doc.at(
                    path,
                    f"worst case is {info.units} {info.encoding} units = "
                    f"{info.segments} segments, over max_segments {tpl.max_segments}"
                    + (f" (UCS-2 forced by {forced!r})" if forced else ""),
                )
                continue
            compiled[name] = ct
        return templates, compiled

    def gateways(self) -> dict[str, Any]:
        gateways: dict[str, Any] = {}
        for name, raw in self.raw_gateways.items():
            gw = validate(self.doc, _GATEWAY_ADAPTER, raw, ("gateways", name))
            backup = _get(raw, "backup")
            if isinstance(backup, str) and (backup == name or backup not in self.raw_gateways):
                self.doc.at(
                    ("gateways", name, "backup"),
                    f"backup gateway {backup!r} is "
                    + ("itself" if backup == name else "not defined in gateways"),
                )
            if gw is not None:
                gateways[name] = gw
        return gateways

    def rules(self) -> list[schema.Rule]:
        rules: list[schema.Rule] = []
        names: dict[str, int] = {}
        for i, raw in enumerate(self._raw("rules", list) or []):
            rule = validate(self.doc, schema.Rule, raw, ("rules", i))
            name = _get(raw, "name")
            if isinstance(name, str):
                if name in names:
                    first = self.doc.values.get(("rules", names[name], "name"))
                    self.doc.at(
                        ("rules", i, "name"),
                        f"duplicate rule name {name!r}"
                        + (f" (first at line {first.line + 1})" if first else ""),
                    )
                names.setdefault(name, i)
            self.need_template(_get(raw, "send", "template"), ("rules", i, "send", "template"))
            self.need_gateway(_get(raw, "send", "gateway"), ("rules", i, "send", "gateway"))
            raw_to = _get(raw, "send", "to")
            targets = [raw_to] if isinstance(raw_to, str) else raw_to
            to = (
                self._recipients(targets, i, isinstance(raw_to, list))
                if isinstance(targets, list)
                else None
            )
            if rule is not None and rule.send.at == "next_open" and not self.has_hours:
                self.doc.at(("rules", i, "send", "at"),
                            "at: next_open needs defaults.business_hours")
            if rule is not None and rule.unless and not (rule.send.delay or rule.send.at):
                self.doc.at(("rules", i, "unless"),
                            "unless cancels a scheduled text: give send.delay or send.at")
            if rule is not None:
                if to is not None:
                    rule = rule.model_copy(update={"send": rule.send.model_copy(update={"to": to})})
                rules.append(rule)
        return rules

    def _recipients(self, targets: list[Any], i: int, listed: bool) -> tuple[str, ...]:
        """caller/agent/both stay as words; numbers become E.164."""
        to: list[str] = []
        for j, target in enumerate(targets):
            if not isinstance(target, str) or target in _RECIPIENTS:
                to.append(str(target))  # a wrong type is reported by the schema
                continue
            info = classify(target, self.region or "ZZ")
            if info.e164 is None:
                where: KeyPath = ("rules", i, "send", "to", *((j,) if listed else ()))
                self.doc.at(
                    where,
                    f"{target!r} is neither caller, agent, both nor a usable "
                    f"number ({info.detail})",
                )
            else:
                to.append(info.e164)
        return tuple(dict.fromkeys(to))

    def replies(self) -> schema.Replies:
        raw = self._raw("replies", dict)
        if raw is None:
            return schema.Replies()
        replies = validate(self.doc, schema.Replies, raw, ("replies",)) or schema.Replies()
        seen: dict[str, str] = {}
        keywords = _get(raw, "keywords")
        # Not a mapping: the schema has reported it.
        for word, action in (keywords if isinstance(keywords, dict) else {}).items():
            upper = word.upper()
            if upper in seen:
                self.doc.at(
                    ("replies", "keywords", word),
                    f"keyword {word!r} repeats {seen[upper]!r} (keywords ignore case)",
                    key=True,
                )
            seen.setdefault(upper, word)
            self.need_template(_get(action, "reply"), ("replies", "keywords", word, "reply"))
        self.need_template(_get(raw, "help"), ("replies", "help"))
        keywords = {w.upper(): a for w, a in replies.keywords.items()}
        return replies.model_copy(update={"keywords": keywords})

    def pbx(self) -> schema.Pbx:
        raw = self.data.get("pbx")
        if raw is None:
            return schema.Pbx()
        if not isinstance(raw, dict):
            return schema.Pbx()  # the outline (TopLevel) has said what is wrong
        return validate(self.doc, schema.Pbx, raw, ("pbx",)) or schema.Pbx()

    def pbxes(self) -> tuple[PbxLinkConfig, ...]:
        """The AMI links of one agent watching several PBXs: names unique, secret files readable
        (a missing one is said here, at its line, not when the agent first connects)."""
        raw = self.data.get("pbxes")
        if not isinstance(raw, list):
            return ()  # absent: the settings' one PBX; not a list: the outline has said so
        links: list[PbxLinkConfig] = []
        names: dict[str, int] = {}
        for i, entry in enumerate(raw):
            link = validate(self.doc, PbxLinkConfig, entry, ("pbxes", i))
            name = _get(entry, "name")
            if isinstance(name, str):
                if name in names:
                    first = self.doc.values.get(("pbxes", names[name], "name"))
                    self.doc.at(("pbxes", i, "name"), f"duplicate PBX name {name!r}"
                                + (f" (first at line {first.line + 1})" if first else ""))
                names.setdefault(name, i)
            if link is None:
                continue
            try:
                read_secret_file(link.secret_file, "AMI secret file", strict=False)
            except ConfigError as e:
                self.doc.at(("pbxes", i, "secret_file"), str(e))
                continue
            links.append(link)
        return tuple(links)

    def retention(self) -> schema.Retention:
        raw = self.data.get("retention")
        if not isinstance(raw, dict):
            return schema.Retention()  # absent: the defaults; not a mapping: the outline said so
        return validate(self.doc, schema.Retention, raw, ("retention",)) or schema.Retention()
