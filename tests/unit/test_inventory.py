"""Trunks and phones from what the PBX says: the lab's Asterisk 22 answers to the inventory's
actions (tests/fixtures/ami/pjsip/, recorded by agent.lab.record.record_inventory as a user
with the system class and as the README's least-privilege user), on every dialplan style,
and what that does to the direction of real recorded calls whose contexts no built-in name
matches (the carrier style: trunk context carrier-in-7, phones in staff)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.ami.inventory import EndpointWatch, Inventory, read_inventory
from agent.ami.transcript import recorded_answers
from agent.calls.pbx import PbxProfile
from agent.commands.doctor import endpoint_findings
from agent.errors import AmiTimeout
from agent.lab.record import STYLE_SCENARIOS
from agent.lab.sipp import PSTN_NUMBER
from agent.models import Direction
from tests.unit.test_tracker_cdr import inventory, track

PJSIP = Path(__file__).resolve().parents[1] / "fixtures" / "ami" / "pjsip"
COMPANY = "+918041234567"  # the front desk's caller id (asterisk_conf/dialplans/carrier)
TRUNKS = {"ours": ["trunk"], "freepbx": ["carrier1"], "vanilla": ["provider"],
          "carrier": ["carrier7", "sbc2"]}


@pytest.mark.parametrize("style", sorted(TRUNKS))
def test_a_user_with_system_gets_every_endpoint_classified(style: str) -> None:
    inv = inventory(style)
    assert inv.complete and not inv.refused
    assert inv.kinds("trunk") == TRUNKS[style]
    listed = (PJSIP / f"{style}_system.txt").read_bytes().count(b"Event: EndpointList\r\n")
    assert len(inv.endpoints) == listed  # nothing left undecided
    for name in TRUNKS[style]:
        assert inv.endpoints[name].why.startswith(("identify", "the PBX registers to it"))


def test_carrier_style_reasons_are_the_pbxs_own() -> None:
    e = inventory("carrier").endpoints
    assert e["carrier7"].why == "identify carrier7-ip matches 127.0.0.1/255.255.255.255"
    assert e["sbc2"].why == "the PBX registers to it (registration sbc2-reg)"
    assert e["frontdesk"].why == "hint 2000@staff watches it"


@pytest.mark.parametrize("style", sorted(TRUNKS))
def test_least_privilege_says_what_is_missing(style: str) -> None:
    inv = inventory(style, "least_privilege")
    assert inv.refused == {"PJSIPShowEndpoints": "Permission denied"}
    assert inv.missing_classes() == ["system"] and not inv.complete
    if style == "carrier":  # hints and the line registration still answer (reporting)
        assert inv.kinds("trunk") == ["sbc2"]
        assert "frontdesk" in inv.kinds("phone") and "carrier7" not in inv.endpoints
    else:
        assert not inv.endpoints


def test_a_phone_showing_the_companys_number_places_an_outbound_call() -> None:
    # The class of bug that texted the company's own number: a phone whose caller id is a
    # full number, in a context no built-in name knows, read as a carrier's inbound call.
    sc = next(s for s in STYLE_SCENARIOS["carrier"] if s.name == "outbound")
    (guessed,) = track("carrier", sc, detect=False)
    assert guessed.direction is Direction.INBOUND and guessed.caller == COMPANY
    (record,) = track("carrier", sc)
    assert record.direction is Direction.OUTBOUND and record.caller == PSTN_NUMBER
    assert record.direction_by == "detected phone: hint 2000@staff watches it"


def test_a_carrier_call_with_a_short_caller_id_is_inbound() -> None:
    sc = next(s for s in STYLE_SCENARIOS["carrier"] if s.name == "short_caller_id")
    (guessed,) = track("carrier", sc, detect=False)
    assert guessed.direction is not Direction.INBOUND  # caller id 4711 looks like a phone
    (record,) = track("carrier", sc)
    assert (record.direction, record.caller, record.agent) == (Direction.INBOUND, "4711", "ops1")
    assert record.direction_by is not None and record.direction_by.startswith(
        "detected trunk: identify carrier7-ip")


def test_pbx_section_overrides_detection_and_detection_precedes_fallback_contexts() -> None:
    detected = inventory("carrier").endpoints
    p = PbxProfile(phones=frozenset({"carrier7"}), detected=detected)
    assert (p.origin("PJSIP/carrier7-00000001", "carrier-in-7", "+919876543210").rule
            == "pbx")
    # A detected phone whose context a built-in name calls a carrier's stays a phone.
    p = PbxProfile(detected=detected, fallback_inbound=("from-pstn",))
    o = p.origin("PJSIP/ops1-00000002", "from-pstn", "2001")
    assert (o.trunk, o.rule) == (False, "detected")
    # Not detected: rules.yaml's fallback pattern decides, and says it guessed.
    o = p.origin("PJSIP/unknown-00000003", "from-pstn", "2001")
    assert (o.trunk, o.rule) == (True, "fallback") and "a guess" in o.how
    assert p.far_is_trunk("PJSIP/carrier7-00000004") and not p.far_is_trunk("PJSIP/ops1-1")
    # Detection is about PJSIP endpoints: a Local channel of the same name is not one.
    assert p.detected_kind("Local/carrier7@staff-00000001;1") is None


def test_doctor_names_trunks_phones_and_the_missing_class() -> None:
    full = "\n".join(str(f) for f in endpoint_findings(inventory("carrier"), "aftercall", []))
    assert "trunk carrier7: identify carrier7-ip" in full and "phone frontdesk: hint" in full
    assert "(2 trunks, 7 phones)" in full and "fallback context patterns" in full
    least = endpoint_findings(inventory("carrier", "least_privilege"), "aftercall", [])
    (missing,) = [f for f in least if "not readable" in f.text]
    assert missing.level == "note" and "needs write class system" in missing.text
    assert "pbx: trunks/phones" in missing.text and "partial" in str(least[-1])


class _Client:
    """The agent's AmiClient at its seam: answers from a recording, or times out."""

    connected = True

    def __init__(self, data: bytes | None) -> None:
        self._answer = recorded_answers(data) if data is not None else None

    async def action(self, action: dict[str, str], *, as_list: Any = False,
                     timeout: float | None = None) -> Any:
        assert as_list is None  # an Error answer to a list action must come back alone
        if self._answer is None:
            raise AmiTimeout("no answer")
        name = action.pop("Action")
        resp, events = await self._answer(name, action)
        return [resp, *events, {"Event": f"{name}Complete"}] if events or "EventList" in resp \
            else resp


async def test_the_agent_logs_a_refusal_once_and_keeps_what_it_had() -> None:
    applied: list[Inventory] = []
    watch = EndpointWatch(applied.append)
    least = _Client((PJSIP / "carrier_least_privilege.txt").read_bytes())
    with capture_logs() as logs:
        for _ in range(3):
            await watch.refresh(least)
        await watch.refresh(_Client(None))
    refusals = [e for e in logs if e["event"] == "pbx_endpoints_not_readable"]
    assert len(refusals) == 1 and refusals[0]["needs"] == ["system"]
    assert len(applied) == 3 and applied[-1].kinds("trunk") == ["sbc2"]
    assert [e["event"] for e in logs].count("pbx_endpoints_unread") == 1
    assert watch.inventory is applied[-1]  # the failed read kept the previous inventory
    assert not any("lab-only-not-a-secret" in str(e) for e in logs)  # an auth's password


def test_recorded_answers_say_unknown_for_what_was_not_asked() -> None:
    answer = recorded_answers(b"")
    resp, events = asyncio.run(answer("PJSIPShowEndpoints", {}))
    assert resp["Response"] == "Error" and events == []
    assert asyncio.run(read_inventory(answer)).refused  # a module not loaded is a refusal


async def test_an_unexpected_failure_is_logged_and_never_stops_the_agent() -> None:
    class Broken(_Client):
        async def action(self, action: dict[str, str], **kw: Any) -> Any:
            raise ValueError("a frame the parser did not expect")

    watch = EndpointWatch(lambda inv: None)
    watch.inventory = before = inventory("carrier")
    with capture_logs() as logs:
        assert await watch.refresh(Broken(None)) is None
    assert watch.inventory is before
    (e,) = [e for e in logs if e["event"] == "pbx_endpoints_unread"]
    assert "ValueError" in e["error"]


def test_fallback_context_patterns_come_from_rules_yaml_not_the_code() -> None:
    from pathlib import Path

    from agent.rules.loader import load_rules, load_rules_text
    from agent.rules.tracking import pbx_profile

    sample = pbx_profile(load_rules(Path(__file__).resolve().parents[2] / "rules.yaml"))
    o = sample.origin("PJSIP/unknown-00000001", "from-pstn", "2001")
    assert (o.trunk, o.rule) == (True, "fallback")
    # A rules.yaml that names no fallback patterns: the same call is read by its caller id.
    text = (Path(__file__).resolve().parents[2] / "rules.yaml").read_text()
    bare = "\n".join(ln for ln in text.splitlines()
                     if not ln.lstrip().startswith(("fallback_", "from-did*", "from-phones")))
    p = pbx_profile(load_rules_text(bare))
    assert p.fallback_inbound == () and p.fallback_internal == ()
    o = p.origin("PJSIP/unknown-00000001", "from-pstn", "2001")
    assert (o.trunk, o.rule) == (False, "caller_id")
