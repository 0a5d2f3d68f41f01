"""Caller id classification: E.164, kinds, and never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sms.numbers import classify, is_region, mask


@pytest.mark.parametrize(
    ("raw", "e164", "kind"),
    [
        ("+919812345678", "+919812345678", "mobile"),
        ("09812345678", "+919812345678", "mobile"),  # national trunk prefix
        ("9812345678", "+919812345678", "mobile"),
        ("+91 98123 45678", "+919812345678", "mobile"),
        ("00919812345678", "+919812345678", "mobile"),  # IDD written as 00
        ("+911123456789", "+911123456789", "landline"),  # Delhi fixed line
        ("01123456789", "+911123456789", "landline"),
        ("+14155552671", "+14155552671", "international"),
        ("+447911123456", "+447911123456", "international"),
    ],
)
def test_valid_numbers(raw: str, e164: str, kind: str) -> None:
    info = classify(raw, "IN")
    assert (info.e164, info.kind) == (e164, kind)
    assert info.reachable


def test_country_is_reported() -> None:
    assert classify("+14155552671", "IN").country == "US"
    assert classify("+919812345678", "IN").country == "IN"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "  ",
        "anonymous",
        "Anonymous",
        "unknown",
        "restricted",
        "<unknown>",
        "RESTRICTED",
        "Private",
    ],
)
def test_anonymous(raw: str | None) -> None:
    info = classify(raw, "IN")
    assert info.kind == "anonymous" and info.e164 is None and not info.reachable


@pytest.mark.parametrize("raw", ["121", "5676", "56767", "567678"])
def test_short_codes(raw: str) -> None:
    info = classify(raw, "IN")
    assert info.kind == "short_code" and info.e164 is None
    assert f"{len(raw)}-digit" in info.detail


@pytest.mark.parametrize("raw", ["VM-ACMECO", "12", "+99912345678901234", "1234567", "++91"])
def test_invalid(raw: str) -> None:
    info = classify(raw, "IN")
    assert info.kind == "invalid" and info.e164 is None and info.detail


def test_region_decides_national_numbers() -> None:
    assert classify("4155552671", "US").kind == "mobile"  # US numbers are fixed-or-mobile
    assert classify("4155552671", "US").e164 == "+14155552671"


def test_is_region() -> None:
    assert is_region("IN") and not is_region("XX")


def test_mask_keeps_country_code_and_last_digits() -> None:
    assert mask("+919812345678") == "+91******5678"
    assert mask("5678") == "****"
    assert mask("98123456", keep=2) == "******56"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_never_raises(raw: str) -> None:
    info = classify(raw, "IN")
    assert info.kind in {
        "mobile",
        "landline",
        "anonymous",
        "international",
        "short_code",
        "invalid",
    }
    assert (info.e164 is None) == (info.kind in {"anonymous", "short_code", "invalid"})
    if info.e164 is not None:
        assert info.e164.startswith("+") and info.e164[1:].isdigit()
    assert classify(raw, "IN") == info  # remembered or not, the same answer


@pytest.mark.parametrize(("raw", "country"), [
    ("09812345672", "IN"), ("+14155552672", "US"), ("+442079460958", "GB"),
])
def test_a_classified_number_has_its_country_without_being_parsed_again(
    raw: str, country: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phonenumbers

    from agent.sms import numbers

    parses = []
    real = phonenumbers.parse
    monkeypatch.setattr(phonenumbers, "parse", lambda *a, **k: parses.append(a) or real(*a, **k))
    info = numbers.classify(raw, "IN")
    assert info.e164 is not None and len(parses) == 1
    assert numbers.country_of(info.e164) == country
    assert len(parses) == 1
    numbers.forget()  # worked out afresh: the same answer
    assert numbers.country_of(info.e164) == country
    assert len(parses) == 2


@pytest.mark.parametrize("raw", [
    "+919812345678", "09812345678", "+91 98123 45678", "+911123456789", "+14155552671",
    "+88216123456", "+99912345678901234", "1234567", "00919812345678",
])
def test_a_remembered_number_is_what_parsing_it_says(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phonenumbers

    from agent.sms import numbers

    numbers.forget()
    parses = []
    real = phonenumbers.parse
    monkeypatch.setattr(phonenumbers, "parse", lambda *a, **k: parses.append(a) or real(*a, **k))
    first = classify(raw, "IN")
    assert classify(raw, "IN") == first and classify(raw, "IN").detail == first.detail
    assert len(parses) == 1  # the second answer came from the memo
    assert classify(raw, "US") is not None and len(parses) == 2  # another region: parsed again


def test_fresh_callers_leave_no_object_behind() -> None:
    """A caller per call (a contact centre's normal day) must not leave Python objects that
    outlive the call: the memos hold bytes in buffers made at start, so after thousands of
    new numbers the interpreter holds as many objects as before them (a 4,096-entry
    ``lru_cache`` and a dict of countries held ~20,000, each living ~80 s at 50 calls/s and
    pinning the object pools they were allocated in)."""
    import gc
    import sys

    from agent.sms import numbers

    def one(i: int) -> None:
        info = classify(f"+9197{i:08d}", "IN")
        assert info.kind == "mobile" and numbers.country_of(info.e164) == "IN"

    for i in range(200):  # phonenumbers' metadata for IN, the regex caches
        one(i)
    gc.collect()
    before = sys.getallocatedblocks()
    for i in range(200, 10_200):
        one(i)
    gc.collect()
    assert sys.getallocatedblocks() - before < 500


def test_the_memo_keeps_the_newest_key_of_a_row_and_skips_what_does_not_fit() -> None:
    from agent.sms.numbers import _Memo

    memo = _Memo(1, 16)  # one row: every key collides
    memo.put(b"a", b"1")
    memo.put(b"bb", b"22")
    assert memo.get(b"a") is None and memo.get(b"bb") == b"22"
    memo.put(b"c" * 10, b"x" * 10)  # longer than a row: not remembered, the old row stays
    assert memo.get(b"c" * 10) is None and memo.get(b"bb") == b"22"
    memo.put(b"e", b"")
    assert memo.get(b"e") == b"" and memo.get(b"") is None
