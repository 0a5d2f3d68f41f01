"""A validated rules.yaml as the engine, the checks and the commands read it (``RuleSet``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.rules import defaults as defaults_schema
from agent.rules import schema
from agent.rules.templates import CompiledTemplate


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A validated rules.yaml: the config and its compiled templates, ready for the engine."""

    config: schema.RulesConfig
    templates: Mapping[str, CompiledTemplate]
    filename: str = "rules.yaml"
    # dotted key path -> (line, column), 1-based, for messages about a valid file (check)
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def rules(self) -> tuple[schema.Rule, ...]:
        return self.config.rules

    @property
    def defaults(self) -> defaults_schema.Defaults:
        return self.config.defaults

    def where(self, path: str) -> str:
        line, col = self.positions.get(path, (None, None))
        return f"{self.filename}:{line}:{col}" if line is not None else self.filename
