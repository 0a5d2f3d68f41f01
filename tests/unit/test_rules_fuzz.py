"""Property tests: any rules.yaml either loads or fails with a RulesError located at file:line,
and no message ever shows a value taken from the environment."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import RulesError
from agent.rules.loader import RuleSet, load_rules, load_rules_text

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPO_RULES = Path(__file__).resolve().parents[2] / "rules.yaml"
BASE = REPO_RULES.read_text(encoding="utf-8")
BASE_LINES = BASE.splitlines(keepends=True)

# Mixed case, so that a message that upper-cases a value (regions) is caught too; 8 characters
# so that the file loads with it as the SMPP password, and a longer one that SMPP refuses.
SECRET = "Zq9xS3cr"
ENV = {
    "SMPP_PASSWORD": SECRET,
    "KANNEL_PASSWORD": SECRET,
    "KANNEL_USER": SECRET,
    "FUZZ_SECRET": SECRET,
    "FUZZ_LONG": SECRET + "Longer",
    "EMPTY": "",
}
# What a mutation may put where a value was: env references in the places that quote values
# back (unknown gateway/template, bad day, bad rate, region, union tags), numbers and
# durations past what int() and timedelta can hold, YAML structure in the wrong place.
ENV_REFS = st.sampled_from([
    "${FUZZ_SECRET}", "'${FUZZ_SECRET}'", "x${FUZZ_SECRET}y", "mon-${FUZZ_SECRET}",
    "'3/${FUZZ_SECRET}'", "'{{ ${FUZZ_SECRET} }}'", "'{% ${FUZZ_SECRET} %}'", "${FUZZ_LONG}",
    "[caller, '${FUZZ_SECRET}']", "{regex: '${FUZZ_SECRET}('}", "${SMPP_PASSWORD:-x}",
    "'${FUZZ_SECRET}:00'", "{'${FUZZ_SECRET}': 1}", "${KANNEL_USER}${FUZZ_LONG}",
    "${UNSET_VAR}", "${EMPTY:-dflt}", "${bad ref}", "${}", "$$", "${FUZZ_SECRET",
])
ODD_VALUES = st.sampled_from([
    "99999999999d", "9" * 30, "9" * 5000, "0x", "0xFFFFF", "-1", "1e999", "nan", "~", "''",
    "[]", "{}", "[a, b]", "{a: 1}", "&a [*a]", "*nowhere", "!!binary aGk=", "|", ">-",
    "a{4294967296}", "'(' * 3", "mon-sun", "fri-mon", "25:00", "09:00", "Asia/Nowhere",
    "America", "ZZ", "in", "+919812345678", "098", "0", "true", "off", "\t", "'\\x01'",
])
REPLACEMENTS = st.one_of(
    ENV_REFS, ODD_VALUES, st.text(max_size=20).filter(lambda s: "\n" not in s),
    st.integers().map(str),
)
# Anything outside YAML's printable set, a BOM, a NEL line break: the reader refuses some.
NASTY = st.sampled_from(["\x00", "\x01", "\x7f", "\x85", "\ufeff", "\u2028", "\t", "\r", "\ufffe"])


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True) or [""]


_FLOW_VALUE = re.compile(r"([A-Za-z_0-9]+): +([^,{}\[\]#\n]*[^,{}\[\]#\n ])")
_VALUE = re.compile(r"(\s*(?:- )?[^:#\s][^:#]*:\s+)([^#\n]+?)(\s*(?:#.*)?\n?)$")


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = list(BASE_LINES)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "truncate",
                                   "insert", "nasty", *["value", "env"] * 3]))
        line = lines[i]
        if op == "value":
            # Values are where the interesting validation is: prefer a line that has one.
            candidates = [j for j, text in enumerate(lines) if _VALUE.match(text)]
            if candidates:
                i = draw(st.sampled_from(candidates))
                m = _VALUE.match(lines[i])
                assert m is not None
                lines[i] = m.group(1) + draw(REPLACEMENTS) + "\n"
        elif op == "env":
            # Any value, inside {flow: mappings} too; quoted there so the braces stay YAML.
            spots = [(j, m.span(2)) for j, text in enumerate(lines)
                     for m in _FLOW_VALUE.finditer(text)]
            if spots:
                i, (a, b) = draw(st.sampled_from(spots))
                ref = draw(ENV_REFS)
                if "{" in lines[i][:a] and not ref.startswith(("'", "[", "{")):
                    ref = "'" + ref + "'"
                lines[i] = lines[i][:a] + ref + lines[i][b:]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + line
        elif op == "dedent":
            lines[i] = line[draw(st.integers(1, 4)):] if line.startswith(" ") else line
        elif op == "truncate":
            lines[i] = line[: draw(st.integers(0, len(line)))]
            del lines[i + 1:]
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=30).filter(lambda s: "\n" not in s)) + "\n")
        else:
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(NASTY) + line[at:]
        if not lines:
            lines = [""]
    return "".join(lines)


yaml_token = st.one_of(
    st.sampled_from(["version", "defaults", "rules", "templates", "gateways", "replies",
                     "agents", "- ", ": ", "-", ":", "[", "]", "{", "}", ",", "&a ", "*a",
                     "<<: *a", "!!str ", "!tag ", "|", ">", "#", "'", '"', "? ", "%YAML 1.2",
                     "---", "...", "${FUZZ_SECRET}", "  ", "\t", "1", "x", "@", "`"]),
    NASTY,
    st.text(max_size=5),
)
yamlish = st.lists(st.lists(yaml_token, max_size=8).map("".join), max_size=12).map("\n".join)
surrogate_free = st.characters(blacklist_categories=["Cs"])


def _files() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d) / "rules.yaml"


def _check(path: Path, text_lines: int) -> RuleSet | None:
    try:
        rs = load_rules(path, env=ENV)
    except RulesError as exc:
        message, shown = str(exc), repr(exc)
        assert exc.problems and message
        for problem, line in zip(exc.problems, message.splitlines(), strict=False):
            assert problem.file == str(path)
            assert line.startswith(f"{path}:"), line
            if problem.message != "the file is empty":
                assert problem.line is not None, line  # every problem is located
                assert 1 <= problem.line <= text_lines + 1, line
                assert line.startswith(f"{path}:{problem.line}"), line
        assert SECRET.lower() not in message.lower() and SECRET.lower() not in shown.lower()
        return None
    assert isinstance(rs, RuleSet)
    return rs


@FUZZ
@given(mutated())
def test_mutations_of_the_repository_rules_load_or_fail_located(text: str) -> None:
    for path in _files():
        path.write_text(text, encoding="utf-8", newline="")
        _check(path, len(_lines(text)))


@FUZZ
@given(st.one_of(yamlish, st.text(surrogate_free, max_size=200)))
def test_random_yamlish_text_loads_or_fails_located(text: str) -> None:
    for path in _files():
        path.write_text(text, encoding="utf-8", newline="")
        _check(path, len(_lines(text)))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=80), st.integers(0, len(BASE)))
def test_bytes_that_are_not_utf8_fail_located(junk: bytes, at: int) -> None:
    data = BASE.encode()[:at] + junk + BASE.encode()[at:]
    for path in _files():
        path.write_bytes(data)
        _check(path, len(_lines(data.decode("utf-8", "replace"))))


# -- regressions: each of these once escaped as another exception, or leaked the secret ---------

HEAD = """\
version: 1
defaults:
  region: IN
  sender_id: ACMECO
  gateway: smsc
gateways:
  smsc: {type: smpp, host: 127.0.0.1, system_id: aftercall}
templates:
  hello: {text: "Hello"}
rules:
  - name: r1
    send: {template: hello}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules_text(text, "r.yaml", ENV)
    assert SECRET.lower() not in str(info.value).lower()
    return [str(p) for p in info.value.problems]


REGRESSIONS = {
    # yaml.reader.ReaderError is no MarkedYAMLError, and is raised as the loader is created
    "control character": (
        HEAD + "x: \x01\n",
        "r.yaml:13:4: YAML syntax: character '\\x01' is not allowed in YAML",
    ),
    # RecursionError, building the tree
    "recursive alias": (
        "a: &a [*a]\n",
        "r.yaml:1:4: a[0]: a YAML alias refers to a node that contains it",
    ),
    # RecursionError, in PyYAML's composer
    "deep flow nesting": ("[" * 3000 + "]" * 3000, "r.yaml:1:"),
    "nesting": ("x: " + "[" * 100 + "]" * 100, "r.yaml:1:68: x" + "[0]" * 64 + ": nested more"),
    # OverflowError from timedelta
    "duration in days": (
        HEAD.replace("region: IN", "region: IN\n  max_age: 99999999999d"),
        "r.yaml:4:12: defaults.max_age: duration '99999999999d' is too long",
    ),
    "duration in seconds": (
        HEAD.replace("send:", "max_age: " + "9" * 30 + "\n    send:"),
        "r.yaml:12:14: rules[0].max_age: duration",
    ),
    # OverflowError and RecursionError from re.compile
    "regex repeat": (
        HEAD.replace("send:", "match: {vars: {X: {regex: 'a{4294967296}'}}}\n    send:"),
        "r.yaml:12:31: rules[0].match.vars.X.regex: bad regular expression",
    ),
    "regex groups": (
        HEAD.replace("send:", "match: {vars: {X: {regex: '" + "(" * 1000 + ")" * 1000
                     + "'}}}\n    send:"),
        "r.yaml:12:31: rules[0].match.vars.X.regex: bad regular expression",
    ),
    # AttributeError: list has no items()
    "keywords as a list": (
        HEAD + "replies: {keywords: [STOP]}\n",
        "r.yaml:13:21: replies.keywords: Input should be",
    ),
    # AssertionError: an empty mapping was never validated, so nothing was reported
    "empty defaults": (
        HEAD.replace("defaults:\n  region: IN\n  sender_id: ACMECO\n  gateway: smsc\n",
                     "defaults: {}\n"),
        "r.yaml:2:11: defaults.sender_id: missing required key 'sender_id'",
    ),
}


@pytest.mark.parametrize(("text", "expected"), REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_regressions_fail_as_rules_errors(text: str, expected: str) -> None:
    out = _problems(text)
    assert any(p.startswith(expected) for p in out), out


def test_a_billion_laughs_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    out = _problems("\n".join(lines) + "\n")
    assert any("more than 50000 values" in p for p in out), out


@pytest.mark.parametrize("text", [
    HEAD.replace("region: IN", "region: ${FUZZ_SECRET}"),  # quoted back upper-cased
    HEAD.replace("gateway: smsc", "gateway: ${FUZZ_SECRET}"),
    HEAD.replace("{template: hello}", "{template: '${FUZZ_SECRET}'}"),
    HEAD.replace("{template: hello}", "{template: hello, to: '${FUZZ_SECRET}'}"),
    HEAD.replace("type: smpp", "type: '${FUZZ_SECRET}'"),
    HEAD.replace('text: "Hello"', "text: '{{ ${FUZZ_SECRET} }}'"),
    HEAD.replace('text: "Hello"', "text: '{% ${FUZZ_SECRET} %}'"),
    HEAD.replace("    send:", "    match: {days: 'mon-${FUZZ_SECRET}'}\n    send:"),  # a part
    HEAD.replace("region: IN", "region: IN\n  rate_limits: {per_number: '3/${FUZZ_SECRET}'}"),
    HEAD.replace("aftercall}", "aftercall, backup: '${FUZZ_SECRET}'}"),
    HEAD.replace("aftercall}", "aftercall, password: '${FUZZ_LONG}'}"),  # too long for SMPP
])
def test_environment_values_never_reach_a_message(text: str) -> None:
    _problems(text)


def test_environment_values_with_quotes_are_hidden_in_their_repr_too() -> None:
    env = {"Q": "it's\\Zq9"}
    with pytest.raises(RulesError) as info:
        load_rules_text(HEAD.replace("gateway: smsc", "gateway: ${Q}"), "r.yaml", env)
    assert "Zq9" not in str(info.value)


def test_undecodable_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(HEAD.encode() + b"  - name: \xff\n")
    with pytest.raises(RulesError) as info:
        load_rules(path, env={})
    assert str(info.value).startswith(f"{path}:13:11: cannot read: not UTF-8")


def test_crlf_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(BASE.replace("\n", "\r\n").encode())
    assert load_rules(path, env={}).rules[0].name == "appointment-confirmation"
