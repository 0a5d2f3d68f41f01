"""Every render is bounded: a template that loops without end, builds a huge text or number, or
recurses is refused when rules.yaml loads (with its file:line), in milliseconds and without
memory growth, and a call whose values push a template over the bounds gets a template_error,
never a hung agent. Ordinary templates render exactly as Jinja's sandbox renders them."""

from __future__ import annotations

import contextlib
import json
import random
import resource
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.errors import RulesError
from agent.models import CallRecord, Direction, Disposition
from agent.rules.loader import load_rules_text
from agent.rules.templates import TemplateProblem, compile_template, render_call
from agent.rules.templating import TemplateRenderError, render
from agent.rules.worstcase import worst_context
from agent.sms.untrusted import DEFAULT_POLICY

DOC = """\
version: 1
defaults: {{region: IN, sender_id: ACMECO, gateway: smsc, timezone: UTC}}
gateways: {{smsc: {{type: smpp, host: h, system_id: x}}}}
templates:
  ok: {{text: "hi"}}
  bad:
    text: {text}
rules:
  - name: r
    match: {{queue: [Sales]}}
    send: {{to: caller, template: bad}}
"""

# Each would, without the bounds, run for ever or take gigabytes while rules.yaml loads.
HOSTILE = {
    "vars listed": "{% for k in vars %}{{ k }}{% endfor %}",
    "nested ranges": "{% for i in range(4000) %}{% for j in range(4000) %}{% endfor %}"
                     "{% endfor %}",
    "a huge range": "{% for i in range(100000) %}{% endfor %}hi",
    "macro fan-out": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
                     "{% endmacro %}{{ f(40) }}",
    "endless macro": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "string repeat": '{{ "x" * 1000000000 }}',
    "name repeat": "{{ (caller_name ~ 'x') * 99999999 }}",
    "power": "{{ 9 ** 9 ** 9 }}",
    "squaring": "{% set ns = namespace(n=99) %}{% for i in range(64) %}"
                "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n % 10 }}",
    "doubling text": '{% set ns = namespace(v="x") %}{% for i in range(64) %}'
                     "{% set ns.v = ns.v ~ ns.v %}{% endfor %}{{ ns.v|length }}",
    "shared lists": "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}"
                    "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|length }}{{ ns.l }}",
    "ljust": '{{ "x".ljust(1000000000) }}',
    "format width": '{{ "{:>1000000000}".format("x") }}',
    "format nested width": '{{ "{:>{w}}".format("x", w=1000000000) }}',
    "percent star": '{{ "%*s" % (1000000000, "x") }}',
    "format filter": '{{ "%999999999s"|format("x") }}',
    "center filter": '{{ "x"|center(1000000000) }}',
    "replace blow-up": '{{ "abc"|replace("", "x" * 4000) }}',
    "join blow-up": '{{ (["x" * 4000] * 4000)|join }}',
    "sum of lists": "{{ ([[1] * 4000] * 4000)|sum(start=[]) }}",
    "long output": "{% for i in range(999) %}{{ caller_name }}{% endfor %}",
    # bounded in size, yet each turn reads thousands of characters or items: weighed by size
    "long reads in a loop": '{% set s = "ab " * 1300 %}{% for i in range(4000) %}'
                            "{% if (s|wordcount) < 0 or s.count('a') < 0 %}x{% endif %}"
                            "{% endfor %}ok",
    "membership in a loop": "{% set l = range(4000)|list %}{% for i in range(4000) %}"
                            "{% if i in l %}{% endif %}{% endfor %}ok",
    "recursive loop": "{% for i in [1] recursive %}{{ loop([1]) }}{% endfor %}",
}

_CHILD = textwrap.dedent("""
    import json, sys, time
    from agent.errors import RulesError
    from agent.rules.loader import load_rules_text
    doc, cases = sys.argv[1], json.loads(sys.argv[2])
    out = {}
    for name, text in cases.items():
        t = time.perf_counter()
        try:
            load_rules_text(doc.replace("@TEXT@", json.dumps(text)))
            out[name] = ["loaded", 0.0]
        except RulesError as exc:
            out[name] = [str(exc), time.perf_counter() - t]
    print(json.dumps(out))
""")


def _limit_memory() -> None:  # the child, not the test run, would be the one to run out
    resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))


def test_hostile_templates_are_refused_at_load_quickly_and_in_bounded_memory() -> None:
    doc = DOC.format(text="@TEXT@")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, doc, json.dumps(HOSTILE)], capture_output=True,
        text=True, timeout=120, preexec_fn=_limit_memory, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    for name, (error, seconds) in results.items():
        assert error != "loaded", name
        assert "rules.yaml:" in error and "templates.bad" in error, (name, error)
        assert seconds < 2, (name, seconds)  # milliseconds here; a hang was the bug
    assert "vars cannot be listed" in results["vars listed"][0]
    assert "recursive loops" in results["recursive loop"][0]


def _call(**kw: object) -> CallRecord:
    base = CallRecord(call_id="c1", caller="+919811000101", caller_name="Asha", queue="Sales",
                      direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
                      talk_seconds=40, ended_at=datetime(2025, 8, 14, 6, 0, tzinfo=UTC),
                      tags=("vip", "renewal"))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_call_that_pushes_a_template_over_the_bounds_gets_a_render_error() -> None:
    # The worst case loops 12 times (12 characters); a call's variable decides the turns.
    src = "{% for i in range(vars.N|int) %}{% for j in range(vars.N|int) %}{% endfor %}" \
          "{% endfor %}done"
    ct = compile_template("t", src, timezone="UTC", public_base_url=None)
    kw = {"timezone": "UTC", "now": datetime(2025, 8, 14, 6, 0, tzinfo=UTC), "link": None}
    assert render_call(ct, _call(vars={"N": "50"}), **kw) == "done"  # type: ignore[arg-type]
    with pytest.raises(TemplateRenderError) as exc:
        render_call(ct, _call(vars={"N": "4000"}), **kw)  # type: ignore[arg-type]
    assert "steps" in exc.value.reason


def test_each_render_has_its_own_budget() -> None:
    ct = compile_template("t", "{% for i in range(3000) %}{% endfor %}ok", timezone="UTC",
                          public_base_url=None)
    ctx = worst_context("UTC", None, DEFAULT_POLICY)
    for _ in range(10):  # 30,000 turns in all, each render under the limit
        assert render("t", ct.template, ctx) == "ok"


ORDINARY = [
    ("Hi {{ caller_name|default('there') }}, thanks for calling {{ queue }} at "
     "{{ ended_at|time }}. Ref {{ call_id|last(6) }}"),
    ("{% for t in tags %}{{ t|upper }}{% if not loop.last %}, {% endif %}{% endfor %}: "
     "{{ '%.1f' % (talk_seconds / 60) }} min, {{ '{:>8}'.format(queue) }}"),
    ("{{ (caller_name ~ ' / ') * 3 }}{{ [queue, caller]|join(' ') }}{{ 2 ** 10 }}"
     "{{ 'a-b-c'|replace('-', ' ') }}{{ queue|center(12) }}{{ [1, 2, 3]|sum }}"),
]


@pytest.mark.parametrize("src", ORDINARY)
def test_ordinary_templates_render_as_the_plain_sandbox_renders_them(src: str) -> None:
    ct = compile_template("t", src, timezone="UTC", public_base_url=None)
    ctx = worst_context("UTC", None, DEFAULT_POLICY)
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    plain.filters.update(ct.template.environment.filters)  # our own filters, bounded or not
    expected = plain.from_string(src).render(ctx).strip()
    assert render("t", ct.template, ctx) == expected
    assert len(expected) > 20


def test_the_bad_template_names_its_line() -> None:
    with pytest.raises(RulesError) as exc:
        load_rules_text(DOC.format(text='"{{ \\"x\\" * 1000000000 }}"'))
    assert "rules.yaml:7" in str(exc.value) and "over the limit of 4,096" in str(exc.value)


# Random templates from the constructs operators use, right and wrong: whatever they are, load
# refuses them as a template problem at their line or renders them, and a call's render gives a
# text or a template_error; never another exception (a traceback in `check`, a crashed worker).
_VALUES = ["caller_name", "vars.X", "tags", "queue", "range(50)", "[1,2,3]", "'ab'", "10", "-1",
           "2.5", "ns.v", "loop.index", "caller", "ended_at", "now", "dict(a=1)", "(1,2)", "none",
           "true", "''", "{'a': [1]}"]
_FILTERS = ["upper", "length", "list", "join(',')", "sort", "first", "last", "string", "int",
            "round(2)", "default('x')", "replace('a','bb')", "center(30)", "truncate(10)",
            "wordwrap(3)", "batch(2)", "slice(3)", "sum", "unique", "reverse", "map('string')",
            "tojson", "abs", "title", "format(1)", "indent(2)", "dictsort", "items", "attr('x')",
            "min", "max", "wordcount", "urlize", "pprint", "date", "time", "last(3)", "mask",
            "trusted", "filesizeformat", "xmlattr", "groupby('a')", "striptags", "count"]
_OPS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "<", "in", "and", "or"]
_TAILS = ["[0]", "[1:]", "[::-1]", '["a"]', ".upper()", ".split()", '.count("a")', ".ljust(20)",
          ".format(1)", ".items()", '.join(["a"])', '.replace("a","b")']


def _expr(rnd: random.Random, depth: int = 0) -> str:
    r = rnd.random()
    if depth > 3 or r < 0.3:
        return rnd.choice(_VALUES)
    if r < 0.55:
        return f"({_expr(rnd, depth + 1)})|{rnd.choice(_FILTERS)}"
    if r < 0.8:
        return f"({_expr(rnd, depth + 1)} {rnd.choice(_OPS)} {_expr(rnd, depth + 1)})"
    return _expr(rnd, depth + 1) + rnd.choice(_TAILS)


def _stmt(rnd: random.Random, depth: int = 0) -> str:
    r = rnd.random()
    if depth > 2 or r < 0.4:
        return "{{ " + _expr(rnd) + " }}"
    if r < 0.6:
        return "{% for x in " + _expr(rnd) + " %}" + _stmt(rnd, depth + 1) + "{% endfor %}"
    if r < 0.75:
        return ("{% if " + _expr(rnd) + " %}" + _stmt(rnd, depth + 1) + "{% else %}"
                + _stmt(rnd, depth + 1) + "{% endif %}")
    if r < 0.85:
        return "{% set ns.v = " + _expr(rnd) + " %}" + _stmt(rnd, depth + 1)
    return ("{% macro m(a) %}" + _stmt(rnd, depth + 1) + "{% endmacro %}{{ m("
            + _expr(rnd) + ") }}")


def test_random_templates_load_or_are_refused_and_render_or_fail_cleanly() -> None:
    rnd = random.Random(20261201)
    kw = {"timezone": "UTC", "now": datetime(2025, 8, 14, 6, 0, tzinfo=UTC), "link": None}
    loaded = 0
    for _ in range(1000):
        src = "{% set ns = namespace(v=1) %}" + _stmt(rnd) + _stmt(rnd) + " ok"
        t = time.perf_counter()
        try:
            ct = compile_template("t", src, timezone="UTC", public_base_url=None)
        except TemplateProblem:
            continue
        finally:
            assert time.perf_counter() - t < 2, src
        loaded += 1
        with contextlib.suppress(TemplateRenderError):
            render_call(ct, _call(vars={"X": "7"}), **kw)  # type: ignore[arg-type]
    assert loaded > 30  # the generator makes working templates too
