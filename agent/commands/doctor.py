"""``aftercall doctor``: what aftercall will see and do on this PBX, and what to fix first.

It logs in with the configured AMI user and reads what that user may read; where AMI cannot
tell (the user's read classes, ``timestampevents``, ``channelvars``), it reads manager.conf
when it is readable here (``--asterisk-etc``, default /etc/asterisk), else it listens to the
live event stream for a few seconds. Then it reads the CDR file (``--cdr-csv``) and runs its
last calls through the same direction, directory and rules the agent would use. With
``pbxes:`` in rules.yaml it does all that for each PBX listed, on that PBX's own link.

Each line is ``ok``, ``note`` (works, but know this) or ``FIX`` (something aftercall needs);
the exit code is 0 without a FIX, 1 with one. Secrets are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import re
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.ami.config import AmiConfig, config_from_link, config_from_settings
from agent.ami.inventory import NEEDS, Inventory, read_inventory
from agent.ami.privileges import describe, excess_write_actions, system_extras
from agent.calls.cdr import build_records, group_calls
from agent.calls.pbx import (Directory,
                             PbxProfile)
from agent.calls.state import extension
from agent.commands.exits import Exit
from agent.errors import ConfigError
from agent.loop.reconcile import read_cdr
from agent.rules.engine import decide
from agent.rules.loader import RuleSet, load_rules
from agent.rules.tracking import agents_directory, pbx_profile
from agent.settings import Settings, is_loopback
from agent.sms.numbers import mask

#: Read classes the tracker needs (call events), and those it uses when present.
NEEDED_READ = ("call",)
USEFUL_READ = {"agent": "queue calls (AgentConnect names the member)",
               "cdr": "voicemail without the dialplan class, and CDR rows live",
               "user": "the classic AGI hook's UserEvent"}


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "note" or "FIX"
    text: str

    def __str__(self) -> str:
        if self.level == "pbx":  # the heading of one PBX's findings
            return f"\n== PBX {self.text}"
        return f"{self.level:>4}  {self.text}"


class _Ami:
    """A bare AMI session: login, one action at a time, and the events in between."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.events: list[dict[str, str]] = []
        self._n = 0

    async def block(self, timeout: float) -> dict[str, str]:
        raw = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)
        out: dict[str, str] = {}
        for line in raw.decode(errors="replace").split("\r\n"):
            k, sep, v = line.partition(": ")
            if sep:
                out[k] = v if k not in out else out[k]
        return out

    async def action(self, name: str, timeout: float = 5.0, **headers: str
                     ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """The response and, for a list action, its events up to the Complete one."""
        self._n += 1
        aid = f"doctor-{self._n}"
        text = f"Action: {name}\r\nActionID: {aid}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.w.write(text.encode())
        await self.w.drain()
        listed: list[dict[str, str]] = []
        resp: dict[str, str] | None = None
        while True:
            b = await self.block(timeout)
            if b.get("ActionID") != aid:
                if "Event" in b:
                    self.events.append(b)
                continue
            if resp is None and "Response" in b:
                resp = b
                if b.get("EventList", "").lower() != "start":
                    return resp, listed
            elif b.get("EventList", "").lower() == "complete":
                return resp or {}, listed
            else:
                listed.append(b)

    async def listen(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                b = await self.block(left)
            except TimeoutError:
                return
            if "Event" in b:
                self.events.append(b)


def _conf(path: Path) -> configparser.ConfigParser | None:
    """An Asterisk .conf read well enough for [section] key = value (None: not readable)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=(";",),
                                   inline_comment_prefixes=(";",), delimiters=("=",))
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    # "#include" lines and "[name](template)" headers are Asterisk's, not INI.
    text = re.sub(r"^#.*$", "", text, flags=re.MULTILINE)
    text = re.sub(r"^\[([^\]]+)\]\([^)]*\)", r"[\1]", text, flags=re.MULTILINE)
    try:
        cp.read_string(text)
    except configparser.Error:
        return None
    return cp


def rules_vars(rules: RuleSet) -> set[str]:
    """Channel variables the rules and templates read (they must be exported to AMI)."""
    names: set[str] = set()
    for rule in rules.rules:
        names.update((rule.match.vars or {}).keys())
        if rule.match.tags:
            names.add("SMS_TAG")
    for tpl in rules.config.templates.values():
        names.update(re.findall(r"\bvars\.([A-Za-z_][A-Za-z0-9_]*)", tpl.text))
    return names


async def examine(settings: Settings, *, etc: Path, last: int = 10, listen: float = 3.0
                  ) -> list[Finding]:
    """Every PBX the agent would watch: rules.yaml's ``pbxes:``, each under its own heading,
    or else the one PBX the settings name. Asterisk's configuration directory ``etc`` is
    read for the settings' PBX and for ``pbxes:`` entries on this host (a remote PBX's
    files are not here: what AMI cannot tell is then heard from its live events)."""
    rules = load_rules(settings.rules)
    if not rules.config.pbxes:
        return await _examine(settings.pbx, lambda: config_from_settings(settings),
                              settings.cdr_csv, etc, rules, last, listen)
    out: list[Finding] = []
    for link in rules.config.pbxes:
        out.append(Finding("pbx", f"{link.name}: {link.host}:{link.port}"
                                  f"{' over TLS' if link.tls else ''}"))
        out += await _examine(link.name, partial(config_from_link, link), link.cdr_csv,
                              etc if is_loopback(link.host) else None, rules, last, listen)
    return out


async def _examine(name: str, config: Callable[[], AmiConfig], cdr_csv: Path | None,
                   etc: Path | None, rules: RuleSet, last: int, listen: float
                   ) -> list[Finding]:
    out: list[Finding] = []
    profile = pbx_profile(rules, name)
    directory = Directory(agents_directory(rules))
    manager = _conf(etc / "manager.conf") if etc else None
    try:
        cfg = config()
        cfg.check()  # the agent's own refusals: no secret, plain-text AMI to a remote host
    except ConfigError as e:
        return [Finding("FIX", str(e))]
    user = cfg.username
    where = f"{cfg.host}:{cfg.port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            cfg.host, cfg.port, ssl=ssl.create_default_context() if cfg.tls else None), 5)
    except (OSError, TimeoutError) as e:
        return [Finding("FIX", f"AMI at {where} does not answer ({e.__class__.__name__}): is "
                               "Asterisk running, and manager.conf [general] enabled/port/"
                               "bindaddr as aftercall's settings say?")]
    ami = _Ami(reader, writer)
    try:
        banner = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace").strip()
        out.append(Finding("ok", f"AMI at {where}: {banner}"))
        resp, _ = await ami.action("Login", Username=user, Secret=cfg.secret)
        if resp.get("Response") != "Success":
            out.append(Finding("FIX", f"Asterisk refused the AMI login of {user!r}: check its "
                                      "secret and permit/deny in manager.conf"))
            return out
        out.append(Finding("ok", f"logged in as {user!r}"))
        core, _ = await ami.action("CoreSettings")
        if core.get("Response") == "Success":
            out.append(Finding("ok", f"Asterisk {core.get('AsteriskVersion', '?')}"))
        else:
            out.append(Finding("note", "Asterisk version: not readable by this user (it needs "
                                       "the system class, which aftercall does not)"))
        listed, _ = await ami.action("ListCommands")
        excess = excess_write_actions(listed)
        if excess:
            out.append(Finding("note", describe(user, excess)))
        else:
            out.append(Finding("ok", "write classes: reporting only (least privilege)"))
        out += _read_classes(manager, user)
        inventory = await read_inventory(lambda name, headers: ami.action(name, **headers))
        out += endpoint_findings(inventory, user, system_extras(listed))
        profile = replace(profile, detected=inventory.endpoints)
        await ami.listen(listen)
        out += _timestamps(manager, ami.events)
        out += _channelvars(manager, rules_vars(rules), ami.events)
    finally:
        writer.close()
    out += _cdr(cdr_csv, etc, rules, profile, directory, last)
    return out


def _read_classes(manager: configparser.ConfigParser | None, user: str) -> list[Finding]:
    if manager is None or not manager.has_section(user):
        return [Finding("note", f"read classes of {user!r}: manager.conf not readable here "
                                "(--asterisk-etc); aftercall needs read = call,agent,cdr")]
    read = {c.strip() for c in manager.get(user, "read", fallback="").split(",") if c.strip()}
    if "all" in read:
        return [Finding("note", f"{user!r} reads every class (read = all): the dialplan class "
                                "alone can be most of the traffic; read = call,agent,cdr,user "
                                "is enough")]
    out = [Finding("FIX", f"{user!r} lacks read class {c!r}: add it to `read =` in "
                          "manager.conf") for c in NEEDED_READ if c not in read]
    out += [Finding("note", f"read class {c!r} missing: {why} will not be seen")
            for c, why in USEFUL_READ.items() if c not in read]
    if not out:
        out.append(Finding("ok", f"read classes: {', '.join(sorted(read))}"))
    return out


#: How many phones doctor names one by one (trunks are always all named).
_PHONES_SHOWN = 12


def endpoint_findings(inv: Inventory, user: str, extras: list[str]) -> list[Finding]:
    """What the PBX's PJSIP configuration says each endpoint is, what the user could not read,
    and the order direction is decided in."""
    out: list[Finding] = []
    if "PJSIPShowEndpoints" in inv.refused:
        out.append(Finding("note", (
            f"PJSIP endpoints: not readable by {user!r} (PJSIPShowEndpoints: "
            f"{inv.refused['PJSIPShowEndpoints']}; it needs write class system). Trunks and "
            "phones are then known only from dialplan hints and line registrations: name the "
            "others in rules.yaml pbx: trunks/phones, or add system to the user's `write =` "
            "(it also permits Hangup, GetConfig, which reads config files with their "
            "secrets, Reload and ModuleLoad)")))
    elif extras:
        shown = ", ".join(extras[:6]) + (" ..." if len(extras) > 6 else "")
        out.append(Finding("note", f"write class system lets aftercall read PJSIP endpoints; "
                                   f"it also permits {shown}: keep this user's secret as "
                                   "safe as the PBX's own"))
    for action, why in sorted(inv.refused.items()):
        if action != "PJSIPShowEndpoints":
            out.append(Finding("note", f"{action}: {why} (needs write class "
                                       f"{NEEDS.get(action, '?')})"))
    trunks, phones = inv.kinds("trunk"), inv.kinds("phone")
    for name in trunks:
        out.append(Finding("ok", f"trunk {name}: {inv.endpoints[name].why}"))
    for name in phones[:_PHONES_SHOWN]:
        out.append(Finding("ok", f"phone {name}: {inv.endpoints[name].why}"))
    if len(phones) > _PHONES_SHOWN:
        out.append(Finding("ok", f"... and {len(phones) - _PHONES_SHOWN} more phones"))
    if not trunks:
        out.append(Finding("note", "no trunk detected from PJSIP: calls are read by rules.yaml "
                                   "pbx:, then its fallback context patterns, then caller id"))
    out.append(Finding("ok", (
        f"direction: rules.yaml pbx: first, then what PJSIP says ({len(trunks)} trunks, "
        f"{len(phones)} phones{'' if inv.complete else ', partial'}), then pbx:'s fallback "
        f"context patterns (a guess, for endpoints not detected), then caller id")))
    return out


def _timestamps(manager: configparser.ConfigParser | None,
                events: list[dict[str, str]]) -> list[Finding]:
    setting = manager.get("general", "timestampevents", fallback=None) if manager else None
    if setting is None and events:
        setting = "yes" if any("Timestamp" in e for e in events) else "no"
    if setting is None:
        return [Finding("note", "timestampevents: unknown (no event heard, manager.conf not "
                                "readable); without it aftercall uses its receive time")]
    if setting.strip().lower() in ("yes", "true", "on", "1"):
        return [Finding("ok", "timestampevents = yes: call times are Asterisk's")]
    return [Finding("note", "timestampevents is off: call times are aftercall's receive times "
                            "(fine; set timestampevents = yes in manager.conf [general] for "
                            "Asterisk's own)")]


def _channelvars(manager: configparser.ConfigParser | None, used: set[str],
                 events: list[dict[str, str]]) -> list[Finding]:
    if not used:
        return [Finding("ok", "rules read no channel variables")]
    if manager is not None:
        raw = manager.get("general", "channelvars", fallback="")
        exported = {v.strip() for v in raw.split(",") if v.strip()}
    elif events:
        exported = {e.get("ChanVariable", "").split("=", 1)[0] for e in events} - {""}
    else:
        return [Finding("note", f"rules read {', '.join(sorted(used))}: check they are in "
                                "manager.conf [general] channelvars")]
    missing = sorted(used - exported)
    if missing:
        return [Finding("FIX", f"rules read {', '.join(missing)} but manager.conf [general] "
                               f"channelvars does not export them: add them")]
    return [Finding("ok", f"channelvars export what the rules read ({', '.join(sorted(used))})")]


def _cdr(path: Path | None, etc: Path | None, rules: RuleSet, profile: PbxProfile,
         directory: Directory, last: int) -> list[Finding]:
    if path is None:
        return [Finding("note", "no CDR file configured (--cdr-csv): calls that end while "
                                "aftercall is down are not recovered")]
    try:
        parsed = read_cdr(path, not_before=datetime.min.replace(tzinfo=UTC))
    except ConfigError as e:
        return [Finding("FIX", str(e))]
    if parsed is None:
        return [Finding("note", f"{path}: not there yet (Asterisk creates it with its first CDR)")]
    out = [Finding("ok", f"{path}: {len(parsed.rows)} rows readable")]
    if parsed.problems:
        out.append(Finding("FIX", f"{path}: {len(parsed.problems)} rows not in cdr_csv's format "
                                  f"(first: {parsed.problems[0]}): cdr.conf [csv] needs "
                                  "loguniqueid, loguserfield and newcdrcolumns = yes"))
    cdr_conf = _conf(etc / "cdr.conf") if etc else None
    if cdr_conf is not None:
        gmt = cdr_conf.get("csv", "usegmtime", fallback="no").strip().lower() == "yes"
        out.append(Finding("ok" if gmt else "note", "CDR times are UTC (usegmtime = yes)" if gmt
                           else "CDR times are the PBX's local time: set usegmtime = yes"))
    # What the endpoints are, as the tracker will decide for each call.
    kinds: dict[str, Counter[str]] = {}
    seen: set[str] = set()
    for legs in group_calls(parsed.rows).values():
        first = legs[0]
        ep = extension(first.channel) or "?"
        o = profile.origin(first.channel, None, first.src)  # as CDR recovery decides
        kinds.setdefault(f"{'trunk' if o.trunk else 'phone'} {ep}", Counter())[o.how] += 1
        seen.update(x for x in (ep, first.src) if x)
        seen.update(extension(r.dstchannel) or "" for r in legs)
    for name, hows in sorted(kinds.items()):
        how = hows.most_common(1)[0][0]
        guessed = not how.startswith(("pbx.", "detected"))
        out.append(Finding("note" if guessed else "ok", f"{name}: {how}" + (
            ": a guess; name it in rules.yaml pbx: if it is wrong" if guessed else "")))
    for name in seen:
        directory.lookup(name)  # marks the directory keys that name an agent seen
    for key in directory.unmatched():
        out.append(Finding("note", f"agents: {key!r} matches no endpoint or extension in the "
                                   "CDR: key it by extension, endpoint or interface"))
    records = build_records(parsed.rows, region=rules.defaults.region, agents=directory,
                            pbx=profile)[-last:]
    for r in records:
        ds = decide(rules, r, now=r.ended_at)
        to = ", ".join(f"{d.rule} -> {d.recipient.value}" for d in ds) or "no rule fires"
        out.append(Finding("ok", f"call {r.call_id}: {r.direction.value} {mask(r.caller)} "
                                 f"{r.disposition.value} agent {r.agent or '-'}: {to}"))
    return out


def report(findings: list[Finding]) -> tuple[str, int]:
    fixes = [f for f in findings if f.level == "FIX"]
    tail = (f"\n{len(fixes)} to fix before aftercall can work as configured" if fixes
            else "\nnothing blocks aftercall on this PBX")
    return "\n".join(str(f) for f in findings) + tail, Exit.INPUT if fixes else Exit.OK


def register(subparsers: Any) -> None:
    from agent.settings import add_common_args

    p = subparsers.add_parser("doctor", help="what aftercall will see and do on this PBX, and "
                                             "what to fix (exit 0: nothing blocks, 1: fixes listed)")
    add_common_args(p)
    p.add_argument("--asterisk-etc", default="/etc/asterisk",
                   help="Asterisk's configuration directory, read when readable")
    p.add_argument("--last", type=int, default=10, help="how many recent CDR calls to show")
    p.add_argument("--listen", type=float, default=3.0,
                   help="seconds to listen to live events when manager.conf is not readable")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    text, code = report(await examine(Settings.from_args(args), etc=Path(args.asterisk_etc),
                                      last=args.last, listen=args.listen))
    print(text)
    return code
