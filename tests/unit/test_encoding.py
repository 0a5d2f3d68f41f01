"""GSM 03.38 / UCS-2 encoding, unit counting and segmentation."""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the independent "gsm03.38" codec)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sms.encoding import (
    analyze,
    decode_gsm7,
    decode_ucs2,
    encode_gsm7,
    encode_ucs2,
    is_gsm7,
    split_segments,
)

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXT = "\f^{}\\[~]|€"


def test_known_vectors() -> None:
    assert encode_gsm7("@") == b"\x00"
    assert encode_gsm7("Hello") == b"Hello"
    assert encode_gsm7("€") == b"\x1b\x65"
    assert encode_gsm7("[x]") == b"\x1b\x3cx\x1b\x3e"
    assert encode_gsm7("^") == b"\x1b\x14"
    assert encode_gsm7("£¤§à") == b"\x01\x24\x5f\x7f"
    assert encode_ucs2("é€") == b"\x00\xe9\x20\xac"
    assert encode_ucs2("😀") == b"\xd8\x3d\xde\x00"


def test_whole_alphabet_round_trips() -> None:
    assert len(set(GSM_BASIC)) == 127
    text = GSM_BASIC + GSM_EXT
    assert is_gsm7(text)
    assert decode_gsm7(encode_gsm7(text)) == text
    assert len(encode_gsm7(text)) == 127 + 2 * 10


@pytest.mark.parametrize("ch", ["`", "ç", "\x1b", "’", "“", "😀", "\u0308", "\u00a0"])
def test_non_gsm_characters_force_ucs2(ch: str) -> None:
    info = analyze("abc" + ch + "def" + ch)
    assert info.encoding == "UCS-2"
    assert info.forcing_chars == (ch,)
    with pytest.raises(ValueError, match="position 3"):
        encode_gsm7("abc" + ch)


def test_forcing_chars_in_order_of_first_appearance() -> None:
    info = analyze("a’b😀c’d€")
    assert info.forcing_chars == ("’", "😀")
    assert info.units == 9  # the emoji is a surrogate pair


@pytest.mark.parametrize(
    ("n", "segments"), [(0, 1), (1, 1), (153, 1), (154, 1), (160, 1), (161, 2), (306, 2), (307, 3)]
)
def test_gsm_segment_counts(n: int, segments: int) -> None:
    text = "a" * n
    info = analyze(text)
    assert (info.encoding, info.units, info.segments) == ("GSM-7", n, segments)
    parts = split_segments(text)
    assert len(parts) == segments and "".join(parts) == text


@pytest.mark.parametrize(("n", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_segment_counts(n: int, segments: int) -> None:
    text = "ж" * n
    info = analyze(text)
    assert (info.encoding, info.units, info.segments) == ("UCS-2", n, segments)
    assert len(split_segments(text)) == segments


def test_extension_chars_count_two_septets() -> None:
    assert analyze("€" * 80).units == 160
    assert analyze("€" * 80).segments == 1
    assert analyze("€" * 80 + "a").segments == 2


def test_euro_straddling_boundary_moves_to_next_segment() -> None:
    # 152 septets then a 2-septet euro: dividing 154+ by 153 would give 2 segments of which the
    # first ends in a lone escape; the escape pair must move whole into segment two.
    text = "a" * 152 + "€" + "b" * 10
    info = analyze(text)
    assert info.units == 164
    parts = split_segments(text)
    assert parts[0] == "a" * 152
    assert parts[1] == "€" + "b" * 10
    assert info.segments == 2
    # And when the move itself pushes the count: 152 + € + 151 = 305 septets fit 2 x 153 if
    # divided, but the forced move makes 3 segments.
    text = "a" * 152 + "€" + "b" * 152
    assert analyze(text).units == 306
    assert analyze(text).segments == 3
    assert [len(encode_gsm7(p)) for p in split_segments(text)] == [152, 153, 1]


def test_surrogate_pair_straddling_boundary_moves_to_next_segment() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10
    parts = split_segments(text)
    assert parts[0] == "ж" * 66
    assert parts[1].startswith("😀")
    assert analyze(text).segments == 2
    assert all(len(encode_ucs2(p)) <= 134 for p in parts)


def test_decode_gsm7_rules() -> None:
    assert decode_gsm7(b"\x1b\x41") == "A"  # unknown extension code: default-table character
    assert decode_gsm7(b"ab\x1b") == "ab"  # trailing lone escape dropped
    with pytest.raises(ValueError, match="offset 1"):
        decode_gsm7(b"a\x80")


def test_decode_ucs2_is_forgiving() -> None:
    assert decode_ucs2(b"\x00a\x00") == "a"
    assert decode_ucs2(b"\xd8\x00") == "\ufffd"


# Property tests against the independent gsm0338 codec. "\x1b" is excluded from the alphabet:
# gsm0338 maps the ESC control character to septet 0x1B, which is the escape itself, not text.
_gsm_alpha = st.sampled_from(list(GSM_BASIC + GSM_EXT))
_any_text = st.text(
    alphabet=st.one_of(_gsm_alpha, st.characters(blacklist_characters="\x1b")), max_size=400
)


def _ref_gsm(text: str) -> bytes | None:
    try:
        return text.encode("gsm03.38")
    except UnicodeEncodeError:
        return None


@settings(max_examples=200)
@given(_any_text)
def test_gsm_detection_and_units_match_reference(text: str) -> None:
    ref = _ref_gsm(text)
    info = analyze(text)
    assert is_gsm7(text) == (ref is not None)
    if ref is not None:
        assert info.encoding == "GSM-7"
        assert info.units == len(ref)
        assert encode_gsm7(text) == ref
        assert decode_gsm7(ref) == text
    else:
        assert info.encoding == "UCS-2"
        assert info.units == len(text.encode("utf-16-be", "surrogatepass")) // 2
        assert info.forcing_chars


@settings(max_examples=200)
@given(_any_text)
def test_segments_rejoin_and_fit(text: str) -> None:
    info = analyze(text)
    parts = split_segments(text)
    assert "".join(parts) == text
    assert len(parts) == info.segments
    if info.segments > 1:
        limit, enc = (153, encode_gsm7) if info.encoding == "GSM-7" else (134, encode_ucs2)
        assert all(0 < len(enc(p)) <= limit for p in parts)


@settings(max_examples=200)
@given(st.text(alphabet=_gsm_alpha, max_size=400))
def test_gsm_round_trip(text: str) -> None:
    assert decode_gsm7(encode_gsm7(text)) == text


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_ucs2_round_trip(text: str) -> None:
    assert decode_ucs2(encode_ucs2(text)) == text


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcXYZ 0129{}[]~^|\\€@£$\n\r\fÄéΔ") + [
    "😀", "’", "ç", "ع", "\x00", "\x1b"]), max_size=400))
def test_analyze_counts_as_each_character_costs(text: str) -> None:
    """The count over distinct characters equals costing every character one by one: 1 septet
    per basic GSM character and 2 per extension one, else 1 UTF-16 unit (2 past the BMP)."""
    info = analyze(text)
    gsm = all(is_gsm7(ch) for ch in text)
    assert info.encoding == ("GSM-7" if gsm else "UCS-2")
    if gsm:
        assert info.units == sum(len(encode_gsm7(ch)) for ch in text)
    else:
        assert info.units == len(text.encode("utf-16-le")) // 2
        assert info.forcing_chars == tuple(dict.fromkeys(ch for ch in text if not is_gsm7(ch)))


def _split_one_by_one(text: str, encoding: str) -> list[str]:
    """The greedy split costing each character on its own (what split_segments does)."""
    from agent.sms.encoding import _gsm_cost, _ucs2_cost

    cost = _gsm_cost if encoding == "GSM-7" else _ucs2_cost
    single, multi = (160, 153) if encoding == "GSM-7" else (70, 67)
    if sum(cost(ch) for ch in text) <= single:
        return [text]
    parts, start, used = [], 0, 0
    for i, ch in enumerate(text):
        if used + cost(ch) > multi:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost(ch)
    return [*parts, text[start:]]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcXYZ 0129{}[]~^|\\€@£$\n\r\fÄéΔ") + [
    "😀", "’", "ç", "ع", "\x00", "\x1b"]), max_size=400),
    st.sampled_from(["GSM-7", "UCS-2"]))
def test_a_text_splits_as_each_character_costs_under_its_carried_encoding(
        text: str, encoding: str) -> None:
    """The submit path splits under the encoding worked out at render time (even one the text
    does not fit: that part then fails to encode, naming its character), counting over the
    distinct characters exactly as costing each one."""
    assert split_segments(text, encoding) == _split_one_by_one(text, encoding)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_gsm7_reads_each_septet_as_the_default_alphabet_says(data: bytes) -> None:
    """Whatever path it takes (a text without extension characters is read in one pass), each
    septet is its default-alphabet character, an escape reads the extension table (a lone one
    at the end is dropped), and the first octet above 0x7F is named by its offset."""
    from agent.sms.encoding import _BASIC, _EXTENSION

    bad = next((j for j, b in enumerate(data) if b > 0x7F), None)
    if bad is not None:
        with pytest.raises(ValueError, match=f"at offset {bad} "):
            decode_gsm7(data)
        return
    out, i = [], 0
    while i < len(data):
        if data[i] == 0x1B:
            if i + 1 < len(data):
                nb = data[i + 1]
                out.append(_EXTENSION.get(nb) or (" " if nb == 0x1B else _BASIC[nb]))
            i += 2
            continue
        out.append(_BASIC[data[i]])
        i += 1
    assert decode_gsm7(data) == "".join(out)
