"""Numbers inside free text (message texts, details) are masked like recipients: in the API's
masked view and in INFO logs."""

from __future__ import annotations

import io
import json
import sys

import structlog

from agent.logs import setup_logging
from agent.sms.numbers import mask_text


def test_mask_text_hides_every_written_form_of_a_number() -> None:
    assert mask_text("Call from +919811000777 (Ravi)") == "Call from +91******0777 (Ravi)"
    assert mask_text("call +91 98110 00777 now") == "call +91******0777 now"
    assert mask_text("landline 020-7946-0958.") == "landline *******0958."
    assert mask_text("agent 2009 has no mobile; ticket #42; code 1234567") == (
        "agent 2009 has no mobile; ticket #42; code 1234567")  # short runs are not numbers
    stamp = "agent stopped during submit started at 2026-11-30T08:43:45.185177Z"
    assert mask_text(stamp) == stamp  # a time is not a phone number


def test_info_logs_mask_numbers_inside_texts_and_details(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    setup_logging("info", json=True)
    try:
        structlog.get_logger("t").info("sms_suppressed", detail="caller +919811000777 opted out",
                                       text="Call from +919811000777", to="+919811000777")
    finally:
        setup_logging("info")
    line = json.loads(err.getvalue().strip().splitlines()[-1])
    assert "+919811000777" not in err.getvalue()
    assert line["detail"] == "caller +91******0777 opted out"
    assert line["text"] == "Call from +91******0777" and line["to"] == "+91******0777"
