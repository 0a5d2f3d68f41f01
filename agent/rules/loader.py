"""Load rules.yaml: compose the file, validate its sections, every problem in one RulesError."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from agent.errors import Problem, RulesError
from agent.rules import schema
from agent.rules.dlt import problems as dlt_problems
from agent.rules.ruleset import RuleSet
from agent.rules.sections import Sections, validate
from agent.rules.yamldoc import Document, compose, format_path


def _position_map(doc: Document) -> dict[str, tuple[int, int]]:
    return {format_path(p): (m.line + 1, m.column + 1) for p, m in doc.values.items()}


def load_rules_text(
    text: str, filename: str = "rules.yaml", env: Mapping[str, str] | None = None, *,
    dlt: bool = False,
) -> RuleSet:
    """Validate rules.yaml text; raises RulesError carrying every problem found. ``dlt``:
    India DLT's refusals too (agent.rules.dlt), as ``load_rules`` asks by default."""
    doc = Document(filename, os.environ if env is None else env)
    data = compose(text, doc)
    if data is None and doc.problems:  # YAML syntax: nothing further can be read
        raise RulesError(doc.problems)
    if not isinstance(data, dict):
        doc.at((), "the top level must be a mapping (version, defaults, templates, rules, ...)")
        raise RulesError(doc.problems)
    validate(doc, schema.TopLevel, data, ())
    sections = Sections(doc, data, text)
    defaults = sections.defaults()
    agents = sections.agents()
    templates, compiled = sections.templates(defaults)
    gateways = sections.gateways()
    rules = sections.rules()
    replies = sections.replies()
    pbx = sections.pbx()
    pbxes = sections.pbxes()
    retention = sections.retention()
    if doc.problems:
        raise RulesError(sorted(doc.problems, key=lambda p: (p.line or 0, p.column or 0)))
    assert defaults is not None  # no problems means every section validated
    config = schema.RulesConfig(
        defaults=defaults,
        agents=agents,
        templates=templates,
        rules=tuple(rules),
        gateways=gateways,
        replies=replies,
        pbx=pbx,
        pbxes=pbxes,
        retention=retention,
    )
    rs = RuleSet(config, compiled, filename, _position_map(doc))
    if dlt:
        # India DLT scrubbing drops what these refuse. Their messages quote values (a
        # header), so the environment's are starred out as in every other problem.
        found = [replace(p, message=doc.redact(p.message)) for p in dlt_problems(rs)]
        if found:
            raise RulesError(found)
    return rs


def load_rules(path: str | Path, env: Mapping[str, str] | None = None, *,
               dlt: bool = True) -> RuleSet:
    """Read and validate a rules.yaml file; raises RulesError (also for an unreadable file).
    ``dlt=False``: without India DLT's refusals, for tools that judge calls and send nothing
    (explain, replay), so a file can be diagnosed while its registration is still missing."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RulesError([Problem(str(p), None, None, "", f"cannot read: {reason}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[start : exc.start].decode("utf-8")) + 1  # all valid before exc.start
        message = f"cannot read: not UTF-8 (byte 0x{data[exc.start]:02X})"
        raise RulesError([Problem(str(p), line, column, "", message)]) from None
    # What read_text() did: universal newlines.
    # India DLT: check, run, a reload and every command that sends refuse the file alike.
    return load_rules_text(text.replace("\r\n", "\n").replace("\r", "\n"), str(p), env,
                           dlt=dlt)
