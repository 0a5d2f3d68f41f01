"""`aftercall check`: rules.yaml validated, then per template its encoding, length and segments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.commands.exits import Exit
from agent.errors import RulesError
from agent.gateways.config import HttpConfig
from agent.gateways.presets.common import Preset
from agent.rules.dlt import problems as dlt_problems
from agent.rules.language import variants
from agent.rules.loader import RuleSet, load_rules
from agent.rules.schema import Rule
from agent.sms.encoding import SmsInfo
from agent.sms.numbers import country_of


def _capacity(info: SmsInfo) -> int:
    single, multi = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    return single if info.segments == 1 else multi * info.segments


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def problems_text(exc: RulesError) -> str:
    lines = [str(p) for p in exc.problems]
    lines.append(f"{plural(len(exc.problems), 'problem')} found")
    return "\n".join(lines) + "\n"


def _safety(rs: RuleSet) -> list[str]:
    """The sending limits in force, defaults included (README "Security")."""
    limits = rs.defaults.limits()
    countries = limits.allowed_countries
    out = [f"  destinations: {', '.join(sorted(countries)) if countries else 'any country'}"]
    for who, aud in (("callers", limits.callers), ("agents", limits.agents)):
        parts = [f"{name} {r.count}/{_span(r.window.total_seconds())}" for name, r in aud.all()]
        out.append(f"  {who}: {', '.join(parts) if parts else 'no limit'}")
    sp, cur = limits.spend, f" {rs.defaults.currency}" if rs.defaults.currency else ""
    caps = [f"{c}{cur}/{p}" for c, p in ((sp.caps.daily, "day"), (sp.caps.monthly, "month"))
            if c is not None]
    rule_caps = [r.name for r in rs.rules if r.spend]
    out.append(f"  spend: {', '.join(caps) if caps else 'no cap on all texts'}"
               + (f"; rules with their own caps: {', '.join(rule_caps)}" if rule_caps else "")
               + ("" if sp.active or not (caps or rule_caps) else " (no prices: not enforced)"))
    dnd = "sent" if limits.transactional_bypasses_dnd else "suppressed"
    out.append(f"  DND numbers: promotional and service suppressed, transactional {dnd}")
    u = rs.defaults.untrusted
    out.append(f"  caller data: cut to {u.max_length} characters, URLs refused"
               + (f"; untrusted vars: {', '.join(u.vars)}" if u.vars else ""))
    return out


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _warnings(rs: RuleSet) -> list[str]:
    out: list[str] = []
    allowed = rs.defaults.countries()
    for ext, agent in rs.config.agents.items():
        if allowed is not None and agent.mobile and country_of(agent.mobile) not in allowed:
            out.append(
                f"{rs.where(f'agents.{ext}.mobile')}: agents.{ext}.mobile: "
                f"{country_of(agent.mobile) or 'a non-geographic number'} is not in "
                "allowed_countries: texts to this agent will be refused (country_not_allowed)"
            )
    for name, ct in rs.templates.items():
        tpl = rs.config.templates[name]
        if tpl.category != "promotional" and ct.promotional:
            words = ", ".join(repr(w) for w in ct.promotional)
            out.append(
                f"{rs.where(f'templates.{name}.text')}: templates.{name}.text: "
                f"{tpl.category} template reads as promotional ({words}); operators "
                "(India DLT) reject or reclassify such messages"
            )
    for i, rule in enumerate(rs.rules):
        ct = rs.templates[rule.send.template]
        guaranteed = {
            f"vars.{k}"
            for k, v in (rule.match.vars or {}).items()
            if v.present or v.equals or v.regex
        }
        missing = [t for t in ct.worst.required if t.startswith("vars.") and t not in guaranteed]
        if missing:
            out.append(
                f"{rs.where(f'rules[{i}].send.template')}: rules[{i}].send.template: "
                f"template {rule.send.template!r} needs {', '.join(missing)} but the "
                "rule does not require it; calls without it are suppressed "
                "(template_error). Add match.vars.NAME: present, or default() in the "
                "template"
            )
        if _unbounded(rs, rule):
            out.append(
                f"{rs.where(f'rules[{i}].send')}: rules[{i}].send: texts any caller type "
                "(no match.caller_type) with no rate limit for callers and every country "
                "allowed: a burst of calls from premium ranges is texted in full (SMS pumping)"
            )
        cut = _jasmin_cut(rs, rule)
        if cut:
            out.append(
                f"{rs.where(f'rules[{i}].send.template')}: rules[{i}].send.template: "
                f"template {rule.send.template!r} may take {cut[1]} segments and goes through "
                f"Jasmin gateway {cut[0]!r}, which sends at most {JASMIN_MAX_PARTS} parts and "
                "drops the rest without saying so; keep its max_segments at "
                f"{JASMIN_MAX_PARTS} or less (or raise long_content_max_parts in jasmin.cfg)"
            )
        if rule.on == "call_connected" and (rule.match.min_talk or rule.match.max_talk):
            out.append(
                f"{rs.where(f'rules[{i}].match')}: rules[{i}].match: talk time is 0 "
                "when a call connects: min_talk/max_talk never hold on call_connected"
            )
    return out


#: Jasmin's long_content_max_parts by default: the parts of a long text it sends at most.
JASMIN_MAX_PARTS = 5


def _jasmin_cut(rs: RuleSet, rule: Rule) -> tuple[str, int] | None:
    """(gateway, segments) when the rule's texts may be longer than Jasmin sends whole, through
    its gateway or that gateway's backup."""
    tpl = rs.config.templates[rule.send.template]
    worst = rs.templates[rule.send.template].worst
    segments = max([worst.info.segments] + ([worst.non_gsm.segments] if worst.non_gsm else []))
    segments = min(segments, tpl.max_segments)  # over it, the rule's over_segments decides
    if segments <= JASMIN_MAX_PARTS:
        return None
    first = rule.send.gateway or rs.defaults.gateway
    gws = rs.config.gateways
    for name in (first, getattr(gws.get(first), "backup", None)):
        gw = gws.get(name) if name else None
        if isinstance(gw, HttpConfig) and gw.preset is Preset.JASMIN:
            return name, segments
    return None


def _unbounded(rs: RuleSet, rule: Rule) -> bool:
    """A rule that texts callers of any kind while nothing bounds how many texts go out."""
    if not rule.enabled or rule.match.caller_type is not None:
        return False
    if not any(t in ("caller", "both") for t in rule.send.to):
        return False
    limits = rs.defaults.limits()
    return not limits.callers.all() and limits.allowed_countries is None


def check(path: str | Path) -> tuple[str, int]:
    """Validate rules.yaml; report per template its encoding and worst-case size."""
    try:
        rs = load_rules(path)
    except RulesError as exc:
        return problems_text(exc), Exit.INPUT
    dlt = dlt_problems(rs)
    if dlt:
        return problems_text(RulesError(dlt)), Exit.INPUT
    cfg = rs.config
    lines = [
        (
            f"{rs.filename}: valid: {plural(len(cfg.rules), 'rule')}, "
            f"{plural(len(cfg.templates), 'template')}, {plural(len(cfg.gateways), 'gateway')}, "
            f"{plural(len(cfg.agents), 'agent')}"
        ),
        "",
        "safety:",
        *_safety(rs),
        "",
        "templates (worst case: every value present at its longest plausible length):",
    ]
    width = max((len(n) for n in rs.templates), default=0)
    for name, ct in rs.templates.items():
        tpl = cfg.templates[name]
        info = ct.worst.info
        lines.append(
            f"  {name:<{width}}  {tpl.category:<13} {info.encoding:<5}  "
            f"{info.units:>4}/{_capacity(info)} units  "
            f"{plural(info.segments, 'segment')} (max {tpl.max_segments})"
        )
        if info.forcing_chars:
            chars = " ".join(f"{c!r} U+{ord(c):04X}" for c in info.forcing_chars)
            lines.append(f"  {'':<{width}}  UCS-2 forced by: {chars}")
        wide = ct.worst.non_gsm
        if wide is not None and (wide.encoding, wide.segments) != (info.encoding, info.segments):
            over = wide.segments > tpl.max_segments
            lines.append(
                f"  {'':<{width}}  with a non-GSM character in every name and variable: "
                f"{wide.encoding} {wide.units}/{_capacity(wide)} units "
                f"{plural(wide.segments, 'segment')}"
                + (" (over max: the rule's over_segments decides; by default caller values lose those characters, else too_long)"
                   if over else "")
            )
        if ct.worst.required:
            lines.append(
                f"  {'':<{width}}  suppressed when missing: {', '.join(ct.worst.required)}"
            )
    spoken = [(r.name, variants(cfg, r.send.template)) for r in cfg.rules]
    if any(len(v) > 1 for _, v in spoken):
        lines += ["", "languages (per rule):"]
        lines += [f"  {name}: {', '.join(v)}" for name, v in spoken]
    warnings = _warnings(rs)
    if warnings:
        lines += ["", "warnings:"] + [f"  {w}" for w in warnings]
    disabled = [r.name for r in cfg.rules if not r.enabled]
    if disabled:
        lines += ["", f"disabled rules: {', '.join(disabled)}"]
    return "\n".join(lines) + "\n", Exit.OK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("check", help="validate rules.yaml and report per template")
    p.add_argument("rules", nargs="?", default="rules.yaml")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    text, code = check(args.rules)
    print(text)
    return code
