"""What the call tracker takes from rules.yaml: the agent directory and the ``pbx:`` profile."""

from __future__ import annotations

from agent.calls.pbx import PbxProfile
from agent.rules.loader import RuleSet


def pbx_profile(rules: RuleSet, name: str = "default") -> PbxProfile:
    """rules.yaml's ``pbx:`` section as the tracker and the CDR reader want it."""
    p = rules.config.pbx
    return PbxProfile(name=name, trunks=frozenset(p.trunks), phones=frozenset(p.phones),
                      inbound_contexts=tuple(p.inbound_contexts),
                      internal_contexts=tuple(p.internal_contexts),
                      fallback_inbound=tuple(p.fallback_inbound_contexts),
                      fallback_internal=tuple(p.fallback_internal_contexts),
                      region=rules.defaults.region)


def agents_directory(rules: RuleSet) -> dict[str, tuple[str | None, str | None]]:
    """rules.yaml's ``agents:`` as the tracker wants it: extension -> (name, mobile)."""
    return {ext: (a.name, a.mobile) for ext, a in rules.config.agents.items()}
