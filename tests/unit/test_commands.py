"""The command line's shape: one module per subcommand (register + async run), one exit-code
table, and one event loop started in one place."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from agent import cli
from agent.commands import COMMANDS, module
from agent.commands.exits import Exit, exit_for
from agent.errors import (
    AftercallError,
    AmiLoginError,
    ConfigError,
    GatewayPermanentError,
    LabError,
    RulesError,
    StoreError,
)

AGENT = Path(cli.__file__).resolve().parent
HELPERS = {"__init__", "exits", "storeargs"}


def test_every_command_module_has_the_one_shape_and_is_registered() -> None:
    on_disk = {p.stem for p in (AGENT / "commands").glob("*.py")} - HELPERS
    assert set(COMMANDS.values()) == on_disk
    for name in COMMANDS:
        m = module(name)
        assert callable(m.register), m.__name__
        assert inspect.iscoroutinefunction(m.run), m.__name__
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    for name, p in sub.choices.items():
        assert inspect.iscoroutinefunction(p.get_default("run")), name


@pytest.mark.parametrize(("error", "code"), [
    (ConfigError("x"), Exit.INPUT), (RulesError([]), Exit.INPUT),
    (GatewayPermanentError("x"), Exit.INPUT), (AftercallError("x"), Exit.INPUT),
    (AmiLoginError("x"), Exit.CONNECT), (StoreError("x"), Exit.CONNECT),
    (LabError("x"), Exit.LAB),
])
def test_one_exit_table_maps_the_error_tree(error: AftercallError, code: Exit) -> None:
    assert exit_for(error) == code


def test_an_error_leaving_a_command_is_one_line_and_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.db"
    assert cli.execute(cli.build_parser().parse_args(["report", "--db", str(missing)])) == 1
    err = capsys.readouterr().err
    assert err == f"aftercall: {missing}: no such database (set --db or AFTERCALL_DB)\n"


def test_the_event_loop_is_started_only_by_the_command_line() -> None:
    starters = [p.relative_to(AGENT).as_posix() for p in AGENT.rglob("*.py")
                if "asyncio.run(" in p.read_text(encoding="utf-8")]
    assert starters == ["cli.py"]


def test_the_lab_does_not_stand_above_the_agent() -> None:
    """`aftercall lab` drives Asterisk and SIPp; the in-process agent loop is devkit/'s."""
    import re

    above = re.compile(r"^\s*(from|import) agent\.(app|loop|dispatch|web|commands|cli)\b", re.M)
    for path in (AGENT / "lab").rglob("*.py"):
        assert not above.search(path.read_text(encoding="utf-8")), path.name


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_window_that_ends_before_it_starts_is_refused_not_an_empty_report(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "a.db"
    db.touch()
    argv = [command, "--db", str(db), "--since", "2025-02-01", "--until", "2025-01-01"]
    assert cli.execute(cli.build_parser(argv).parse_args(argv)) == Exit.INPUT
    assert capsys.readouterr().err == (
        "aftercall: --until 2025-01-01 is before --since 2025-02-01\n")


@pytest.mark.parametrize("price", ["NaN", "sNaN", "Infinity", "-0.1"])
def test_a_price_that_is_not_a_finite_amount_is_a_usage_error(
    price: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser(["report"]).parse_args(["report", "--price", price])
    assert exc.value.code == Exit.USAGE
    assert "--price" in capsys.readouterr().err
