"""`aftercall explain`: why each rule did or did not fire for one call record, with the texts."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.commands.check import plural, problems_text
from agent.commands.exits import Exit
from agent.commands.storeargs import default_db, need_db, shown
from agent.errors import AftercallError, CallLookupError, RulesError
from agent.models import CallRecord, Decision
from agent.rules.engine import explain as explain_call
from agent.rules.loader import load_rules


def _describe_call(r: CallRecord) -> str:
    parts = [r.trigger.value, r.direction.value, r.disposition.value]
    for label, value in (
        ("queue", r.queue),
        ("did", r.did),
        ("agent", r.agent),
        ("caller", r.caller or "(none)"),
    ):
        if value:
            parts.append(f"{label} {value}")
    parts.append(f"wait {r.wait_seconds:g}s, talk {r.talk_seconds:g}s")
    if r.tags:
        parts.append(f"tags {list(r.tags)}")
    if r.vars:
        parts.append(f"vars {dict(r.vars)}")
    on = f" on PBX {r.pbx}" if r.pbx != "default" else ""
    line = f"call {r.call_id}{on}: " + ", ".join(parts)
    # Which rule made it inbound/outbound (agent.calls.pbx): configured, detected or a guess.
    return line + (f"\n  direction {r.direction.value} by {r.direction_by}" if r.direction_by
                   else "")


def _describe_decision(d: Decision) -> list[str]:
    who = d.recipient.value + (f" {d.number}" if d.number else " (no number)")
    if d.suppress is not None:
        head = f"    -> {who}: SUPPRESSED {d.suppress.value}: {d.detail}"
    else:
        head = (
            f"    -> {who} via {d.gateway} from {d.sender_id}: {d.encoding}, "
            f"{plural(d.segments, 'segment')}, {len(d.text or '')} chars"
        )
    out = [head]
    if d.language is not None:
        out.append(f"       template {d.language}")
    if d.text is not None:
        out.append(f"       {json.dumps(d.text, ensure_ascii=False)}")
    policy = []
    if d.not_before is not None:
        policy.append(f"scheduled for {d.not_before.isoformat()}"
                      + (" unless called again" if d.unless_called_again else ""))
    if d.cooldown_seconds:
        policy.append(f"cooldown {d.cooldown_seconds:g}s")
    if d.quiet_hours:
        policy.append(f"quiet hours {d.quiet_hours[0]}-{d.quiet_hours[1]} {d.quiet_hours[2]}")
    if d.max_age_seconds:
        policy.append(f"max_age {d.max_age_seconds:g}s")
    if policy:
        out.append(f"       then policies: {', '.join(policy)} ({d.timezone})")
    return out


def read_call_arg(arg: str) -> CallRecord | None:
    """A call record from a JSON file (as ``calls`` prints), or from one line of ``calls`` or
    ``replay`` output given inline. None when ``arg`` is neither: then it is a call id, to be
    looked up in the store. Raises OSError/ValueError/TypeError/KeyError on a bad record."""
    text = arg.strip()
    if text.startswith("{"):
        raw = json.loads(text)
    elif Path(arg).is_file():
        raw = json.loads(Path(arg).read_text(encoding="utf-8"))
    else:
        return None
    if not isinstance(raw, dict):
        raise TypeError("expected a JSON object")
    return CallRecord.from_dict(raw)


def explain(
    rules_path: str | Path, call_json_path: str | Path, *,
    record: CallRecord | None = None, stored: list[str] | None = None,
) -> tuple[str, int]:
    """Why each rule did or did not fire for one call record (CallRecord.to_dict JSON, a file or
    an inline line; or ``record`` already read, e.g. from the store). ``stored``: lines saying
    what the agent actually did with the call, shown after the rules' verdicts."""
    try:
        rs = load_rules(rules_path, dlt=False)  # judges calls, sends nothing
    except RulesError as exc:
        return problems_text(exc), Exit.INPUT
    if record is None:
        try:
            record = read_call_arg(str(call_json_path))
            if record is None:
                raise FileNotFoundError(2, "no such file, and not a JSON call record")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return f"{call_json_path}: cannot read the call record: {reason}\n", Exit.INPUT
    # Explain the call as of when it ended, so the output is the same every time it runs.
    now = record.ended_at or record.started_at or datetime.now(UTC)
    lines = [_describe_call(record), ""]
    sent = suppressed = 0
    traces = explain_call(rs, record, now=now)
    for trace in traces:
        if not trace.matched:
            lines.append(f"  rule {trace.rule}: no: {trace.reason}")
            continue
        lines.append(f"  rule {trace.rule}: MATCHED")
        lines += [f"    -> {s}" for s in trace.skipped]
        for d in trace.decisions:
            lines += _describe_decision(d)
            sent += d.suppress is None
            suppressed += d.suppress is not None
    if any(d.text and rs.templates[d.template].uses_link for t in traces for d in t.decisions):
        lines += ["", "(tracked links are shown as placeholders of their final length)"]
    lines += [
        "",
        (
            f"{sent} SMS to send (before opt-out, cooldown, quiet hours and "
            f"rate limits), {suppressed} suppressed"
        ),
    ]
    if stored is not None:
        lines += ["", "what the agent did (from the store):"]
        lines += [f"  {line}" for line in stored] or ["  no message rows for this call"]
    return "\n".join(lines) + "\n", Exit.OK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("explain", help="why each rule did or did not fire for a call record")
    p.add_argument("call", help="a call record as JSON (a file, or a line printed by `calls` or "
                                "`replay`), or the id of a call in the store (--db): CALLID, or "
                                "PBX:CALLID when PBXs sharing the store have calls with that id")
    p.add_argument("--pbx", default=None,
                   help="the PBX of the call id (when several PBXs have a call with that id)")
    p.add_argument("--rules", default="rules.yaml")
    p.add_argument("--db", default=None,
                   help="store to look a call id up in (AFTERCALL_DB, default ./aftercall.db)")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    if not args.call.strip().startswith("{") and not Path(args.call).is_file():
        record, stored = await stored_call(args.db or default_db(), args.call, args.pbx)
        text, code = explain(args.rules, args.call, record=record, stored=stored)
    else:
        text, code = explain(args.rules, args.call)
    print(text)
    return code


async def stored_call(db: str, given: str,
                      pbx: str | None = None) -> tuple[CallRecord, list[str]]:
    """``aftercall explain CALL_ID``: the call record the agent stored under that id (of ``pbx``,
    or ``PBX:CALL_ID``; an id on several PBXs needs one) and one line per message row it wrote
    for it (rule, recipient, state, reason, detail)."""
    from agent.sms.numbers import mask
    from agent.store import make_store
    from agent.store.base import MessageFilter
    from agent.store.lookup import find_call

    need_db(db)
    async with make_store(db) as store:
        try:
            pbx, call_id = await find_call(store, given, pbx)
        except CallLookupError as e:
            more = " or --pbx" if e.pbxes else ""
            raise CallLookupError(f"{e}{more} (in {shown(db)})", e.pbxes) from None
        record = await store.get_call(call_id, pbx=pbx)
        if record is None:
            raise AftercallError(f"{given}: no call with this id in {shown(db)}")
        rows = await store.list_messages(MessageFilter(call_id=call_id, pbx=pbx, limit=None))
    return record, [
        f"{r.rule} -> {r.recipient_kind.value} {mask(r.number) if r.number else '-'}: "
        f"{r.state.value}" + (f" ({r.reason})" if r.reason else "")
        + (f": {r.detail}" if r.detail else "")
        for r in rows
    ]
