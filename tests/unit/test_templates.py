"""Templates: merge tags, filters, strict missing values, sandbox, worst-case analysis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.models import CallRecord, Disposition
from agent.rules.templates import (
    CompiledTemplate,
    TemplateProblem,
    TemplateRenderError,
    build_context,
    compile_template,
    merge_tags,
    promotional_words,
    render_template,
    reserved_link,
)

BASE = "https://acme.in"
ENDED = datetime(2025, 8, 14, 4, 32, tzinfo=UTC)  # 10:02 in Asia/Kolkata
RECORD = CallRecord(
    call_id="1712345678.42",
    caller="+919812345678",
    caller_name="ravi kumar",
    queue="Support",
    disposition=Disposition.ANSWERED,
    ended_at=ENDED,
    talk_seconds=75.0,
    vars={"TICKET": "48213", "EMPTY": ""},
)


def compile_(text: str, base: str | None = BASE) -> CompiledTemplate:
    return compile_template("t", text, timezone="Asia/Kolkata", public_base_url=base)


def render(text: str, record: CallRecord = RECORD, link: object = None) -> str:
    ctx = build_context(
        record, timezone="Asia/Kolkata", now=ENDED, link=link or reserved_link(BASE)
    )  # type: ignore[arg-type]
    return render_template(compile_(text), ctx)


def test_merge_tags_and_vars() -> None:
    assert (
        render("Hi {{ caller_name }}, #{{ vars.TICKET }} in {{ queue }}")
        == "Hi ravi kumar, #48213 in Support"
    )
    assert (
        render("{{ vars['TICKET'] }} {{ disposition }} {{ talk_seconds | int }}")
        == "48213 answered 75"
    )


def test_datetimes_are_shown_in_the_configured_timezone() -> None:
    assert render("{{ ended_at | time }} {{ ended_at | date }}") == "10:02 14 Aug 2025"
    assert (
        render("{{ ended_at | datetime('%d/%m %H:%M') }} {{ now | time }}") == "14/08 10:02 10:02"
    )


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive = CallRecord(call_id="1", ended_at=datetime(2025, 8, 14, 4, 32))
    assert render("{{ ended_at | time }}", naive) == "10:02"


def test_filters_last_mask_title() -> None:
    assert (
        render("{{ caller | last(4) }} {{ caller | mask }} {{ caller_name | title }}")
        == "5678 +91******5678 Ravi Kumar"
    )
    assert render("{{ call_id | last }}") == "7842"  # digits of 1712345678.42


def test_missing_value_raises_naming_it() -> None:
    bare = CallRecord(call_id="1")
    with pytest.raises(TemplateRenderError, match="caller_name is missing for this call"):
        render("Hi {{ caller_name }}", bare)
    with pytest.raises(TemplateRenderError, match="vars.TICKET is missing for this call"):
        render("#{{ vars.TICKET }}", bare)


def test_empty_values_count_as_missing() -> None:
    with pytest.raises(TemplateRenderError, match="vars.EMPTY is missing"):
        render("[{{ vars.EMPTY }}]")
    blank = CallRecord(call_id="1", caller_name="")
    assert render("Hi {{ caller_name | default('there') }}", blank) == "Hi there"


def test_default_and_is_defined_cover_missing_values() -> None:
    bare = CallRecord(call_id="1")
    text = (
        "Hi {{ caller_name | default('there') }}{% if vars.T is defined %} #{{ vars.T }}"
        "{% endif %}, at {{ ended_at | default(now) | time }}"
    )
    assert render(text, bare) == "Hi there, at 10:02"


def test_filter_on_a_missing_value_raises() -> None:
    with pytest.raises(TemplateRenderError, match="answered_at is missing"):
        render("{{ answered_at | time }}")


def test_a_template_that_can_never_render_is_refused_at_load() -> None:
    with pytest.raises(TemplateProblem, match="needs a date/time, got str"):
        compile_("{{ caller | time }}")


def test_empty_rendering_is_an_error() -> None:
    with pytest.raises(TemplateRenderError, match="empty message"):
        render("{% if vars.NOPE is defined %}x{% endif %}  ")


def test_sandbox_blocks_introspection() -> None:
    with pytest.raises(TemplateProblem, match="unsafe"):
        compile_("{{ caller.__class__.__mro__ }}")
    with pytest.raises(TemplateProblem, match="unsafe"):
        compile_("{{ vars._values }}")


def test_link_calls_the_injected_factory_with_the_url() -> None:
    seen: list[str] = []

    def factory(url: str) -> str:
        seen.append(url)
        return "https://acme.in/l/AbC123xYz0"

    out = render("Track: {{ link('https://help.acme.in/t/' ~ vars.TICKET) }}", link=factory)
    assert out == "Track: https://acme.in/l/AbC123xYz0"
    assert seen == ["https://help.acme.in/t/48213"]


def test_link_with_a_missing_value_fails_before_calling_the_factory() -> None:
    def factory(url: str) -> str:
        raise AssertionError("must not be called")

    with pytest.raises(TemplateRenderError, match="vars.NOPE is missing"):
        render("{{ link(vars.NOPE) }}", link=factory)


def test_reserved_link_has_the_length_of_a_real_short_link() -> None:
    placeholder = reserved_link(BASE)("https://example.com/very/long/path")
    assert len(placeholder) == len(BASE) + len("/l/") + 10


def test_merge_tag_extraction() -> None:
    tags = merge_tags(
        "{{ caller }}{{ vars.A }}{{ vars['B'] }}{{ link(x) if x is defined }}"
        "{% for t in tags %}{{ t }}{% endfor %}{{ range(3) | list }}"
    )
    assert tags == {"caller", "vars.A", "vars.B", "link", "x", "tags"}


def test_unknown_merge_tag_is_refused_at_compile_time() -> None:
    with pytest.raises(TemplateProblem, match="unknown merge tag 'ticket'"):
        compile_("{{ ticket }}")


def test_syntax_error_carries_the_template_line() -> None:
    with pytest.raises(TemplateProblem) as info:
        compile_("line one\n{{ caller }\n")
    assert info.value.line == 2 and "syntax error" in str(info.value)


def test_worst_case_uses_longest_plausible_values() -> None:
    ct = compile_("{{ caller }},{{ caller_name }},{{ queue }},{{ vars.X }},{{ link('u') }}")
    # caller and caller_name are caller-controlled: cut to the untrusted budget (20) at send time
    assert ct.worst.info.units == 20 + 1 + 20 + 1 + 12 + 1 + 12 + 1 + len(BASE) + 13
    assert ct.worst.info.encoding == "GSM-7" and ct.worst.info.segments == 1
    assert ct.worst.required == ("caller", "caller_name", "queue", "vars.X")


def test_worst_case_takes_the_longer_fallback() -> None:
    ct = compile_("Hi {{ caller_name | default('valued customer of ACME Corporation') }}")
    assert ct.worst.text == "Hi valued customer of ACME Corporation"
    assert ct.worst.required == ()


def test_worst_case_datetime_names() -> None:
    ct = compile_("{{ now | datetime('%A %d %B %Y %H:%M') }}")
    assert ct.worst.text == "Wednesday 29 September 2027 23:59"


def test_ucs2_forcing_characters_are_reported() -> None:
    ct = compile_("Thanks \u2019 {{ caller_name | default('') }} \U0001f600")
    assert ct.worst.info.encoding == "UCS-2"
    assert ct.worst.info.forcing_chars == ("\u2019", "\U0001f600")


def test_promotional_words_ignore_merge_tags() -> None:
    assert promotional_words("Get 20% off and FREE delivery with coupon SAVE") == (
        "20% off",
        "free",
        "coupon",
    )
    assert promotional_words("Your ticket {{ vars.OFFER_ID }} is logged") == ()


@pytest.mark.parametrize("text", [
    "Hi {{ caller_name | default(agent_name) | default('there') }}, ticket {{ vars.TICKET }}",
    "{{ vars['TICKET'] }} and {{ vars.TICKET }}",
    "{% set q = queue %}{{ q }} at {{ ended_at.strftime('%H:%M') }}, now {{ now.hour }}",
    "{% if talk_seconds > 60 %}long{% else %}short{% endif %} {{ disposition }} {{ caller }}",
    "{{ link('https://acme.in/t/' ~ vars.TICKET) }} {{ direction | default('?') }}",
])
def test_a_call_renders_the_same_from_the_names_its_template_reads(text: str) -> None:
    """render_call builds only the context names the template reads: the text is the one the
    whole context gives."""
    from agent.rules.templates import render_call

    compiled = compile_(text)
    whole = render_template(compiled, build_context(
        RECORD, timezone="Asia/Kolkata", now=ENDED, link=reserved_link(BASE)))
    assert render_call(compiled, RECORD, timezone="Asia/Kolkata", now=ENDED,
                       link=reserved_link(BASE)) == whole


def test_the_repositorys_templates_render_the_same_from_the_names_they_read() -> None:
    from pathlib import Path

    from agent.rules.loader import load_rules
    from agent.rules.templates import render_call

    rules = load_rules(Path(__file__).resolve().parents[2] / "rules.yaml",
                       env={"SMPP_PASSWORD": "x", "KANNEL_USER": "u", "KANNEL_PASSWORD": "p",
                            "SMPP_PORT": "2775", "SIM_HTTP_PORT": "13013"})
    assert rules.templates
    for compiled in rules.templates.values():
        whole = build_context(RECORD, timezone="Asia/Kolkata", now=ENDED,
                              link=reserved_link(BASE))
        try:
            expected: str | type[Exception] = render_template(compiled, whole)
        except TemplateRenderError as exc:
            expected = type(exc)
        try:
            got: str | type[Exception] = render_call(
                compiled, RECORD, timezone="Asia/Kolkata", now=ENDED, link=reserved_link(BASE),
                over_segments="send")
        except TemplateRenderError as exc:
            got = type(exc)
        assert got == expected, compiled.name
