"""Numbers typed or sent to us are ASCII digits: ``str.isdigit()`` alone also accepts "²" and
other superscripts, which ``int()`` then refuses with a ValueError that escaped as a crash (a
gateway's webhook, a recording link, an AMI header, a CDR row, rules.yaml, the web's offset).
Each now gives its own clear refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from agent.calls.cdr_rows import CdrRowError, _int
from agent.calls.state import cause, duration
from agent.gateways.presets.jasmin import mo_data_coding
from agent.gateways.webhooks import WebhookPayloadError
from agent.rules.defaults import RateLimit
from agent.scalars import parse_duration
from agent.sms.recording import RecordingSigner, Verdict
from agent.web.api import BadParam, _offset

SUPER = "\u00b2\u00b3"  # "²³": isdigit() is True, int() raises


def test_ami_headers_with_superscript_digits_read_as_absent() -> None:
    assert cause(SUPER) is None and cause("16") == 16
    assert duration(f"0:0{SUPER[0]}:10") is None and duration("0:01:10") == 70.0


def test_a_jasmin_coding_of_superscripts_is_a_payload_error() -> None:
    assert mo_data_coding("8", "w") == 8
    with pytest.raises(WebhookPayloadError, match="coding"):
        mo_data_coding(SUPER, "w")


def test_a_recording_link_with_a_superscript_expiry_is_refused() -> None:
    signer = RecordingSigner(b"k" * 32, "https://x.example", timedelta(days=1))
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert signer.check("c1", SUPER, "A" * 43, "a.wav", now) is Verdict.BAD


def test_a_cdr_column_and_the_web_offset_refuse_superscripts_by_name() -> None:
    with pytest.raises(CdrRowError):
        _int(SUPER, 3, "duration")
    with pytest.raises(BadParam):
        _offset({"offset": SUPER})


def test_rules_yaml_numbers_with_superscripts_are_validation_errors() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(SUPER)
    with pytest.raises(ValidationError, match="bad rate"):
        RateLimit.model_validate(f"{SUPER}/1h")


def test_a_signature_header_with_a_superscript_or_huge_time_is_malformed() -> None:
    from agent.gateways.presets.generic import parse_signature

    assert parse_signature("t=1700000000,v1=ab") == (1700000000, "ab")
    for t in (SUPER, "9" * 5000):
        assert parse_signature(f"t={t},v1=ab") is None
