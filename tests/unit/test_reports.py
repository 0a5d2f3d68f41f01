"""Report figures from rows written through the real store, the renderers, and the CLI export."""

from __future__ import annotations

import csv
import io
import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))
from web_helpers import seed

from agent.reports import (
    EXPORT_COLUMNS,
    build_report,
    export_messages,
    percentile,
    render_csv,
    render_table,
)
from agent.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with SqliteStore(tmp_path / "aftercall.db") as s:
        yield s


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 95) == 5.0


async def test_report_figures(store: SqliteStore) -> None:
    await seed(store)
    rep = await build_report(store, price_per_segment=Decimal("0.12"), currency="INR")
    t = rep.total
    assert (t.total, t.sent, t.delivered, t.undelivered, t.failed, t.suppressed) == (7, 4, 3, 1, 1, 2)
    assert t.delivery_rate == 0.75
    assert t.suppressed_by_reason == {"opt_out": 1, "dnd": 1}
    assert t.failures_by_reason == {"undelivered": 1, "rejected": 1}
    assert t.failures_by_error == {"001": 1}
    assert t.segments == 4 and t.cost == Decimal("0.48")
    assert t.opt_outs == 1 and t.replies_by_sentiment == {"positive": 1, "keyword": 1}
    rules = {f.key: f for f in rep.by_rule}
    sup = rules["support-followup"]
    assert (sup.sent, sup.delivered, sup.with_links, sup.clicked, sup.clicks) == (3, 2, 2, 1, 2)
    assert sup.ctr == 0.5 and sup.delivery_rate == pytest.approx(2 / 3)
    assert sup.delivery_p50_s == pytest.approx(4.98) and sup.delivery_p95_s == pytest.approx(8.96)
    assert sup.hangup_to_submit_p50_ms == 40.0 and sup.hangup_to_submit_p99_ms == 60.0
    missed = rules["missed-call-sorry"]
    assert (missed.sent, missed.delivered, missed.failed, missed.ctr) == (1, 1, 1, None)
    assert {f.key for f in rep.by_gateway} == {"smsc", "backup"}
    assert [(p.day.isoformat(), p.total, p.delivered) for p in rep.by_day] == [
        ("2024-05-01", 4, 2), ("2024-05-02", 3, 1)]
    only = await build_report(store, rule="missed-call-sorry")
    assert only.total.total == 3 and [f.key for f in only.by_rule] == ["missed-call-sorry"]


async def test_renderers(store: SqliteStore) -> None:
    await seed(store)
    rep = await build_report(store, price_per_segment=Decimal("0.12"), currency="INR")
    table = render_table(rep)
    assert "support-followup" in table and "66.7%" in table and "50.0%" in table
    rows = list(csv.DictReader(io.StringIO(render_csv(rep))))
    assert [(r["scope"], r["key"]) for r in rows][0] == ("all", "all")
    assert json.loads(json.dumps(rep.to_dict()))["total"]["cost"] == pytest.approx(0.48)


async def test_export_csv_and_json(store: SqliteStore) -> None:
    seeded = await seed(store)
    text = await export_messages(store, None, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert sorted(r["id"] for r in rows) == sorted(seeded.ids.values())
    m1 = next(r for r in rows if r["id"] == seeded.ids["m1"])
    assert (m1["status"], m1["clicks"], m1["number"]) == ("delivered", "2", "+919812345610")
    doc = json.loads(await export_messages(store, None, "json"))
    assert len(doc) == 7


async def test_cli_export_csv_parses_one_row_per_message(
    store: SqliteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from agent.cli import build_parser, execute

    seeded = await seed(store)
    parser = build_parser()
    db = str(store.path)

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return execute(args)

    # A command runs in its own event loop: run it off this test's.
    assert await asyncio.to_thread(run, "export", "--db", db, "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(seeded.ids) and {r["id"] for r in rows} == set(seeded.ids.values())
    assert await asyncio.to_thread(run, "report", "--db", db, "--price", "0.12") == 0
    assert "missed-call-sorry" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "optout", "--db", db, "add", "09812345678") == 0
    assert await store.is_opted_out("+919812345678")
    assert await asyncio.to_thread(run, "optout", "--db", db, "list") == 0
    assert "+919812345678" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "optout", "--db", db, "remove", "+919812345678") == 0
    assert not await store.is_opted_out("+919812345678")
    dnd = tmp_path / "dnd.csv"
    dnd.write_text("number\n09876543210\nnot-a-number\n")
    assert await asyncio.to_thread(run, "dnd", "--db", db, "import", str(dnd)) == 0
    assert await store.is_dnd("+919876543210")
    assert await asyncio.to_thread(run, "export", "--db", str(tmp_path / "none.db")) == 1
    assert "no such database" in capsys.readouterr().err


def test_cli_names_a_bad_status_and_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import build_parser, execute

    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["export", "--status", "bogus"])
    assert exit_.value.code == 2 and "expected one or more of queued" in capsys.readouterr().err
    missing = tmp_path / "typo.db"
    args = parser.parse_args(["report", "--db", str(missing)])
    assert execute(args) == 1
    assert "no such database" in capsys.readouterr().err and not missing.exists()


@pytest.mark.parametrize("argv", [
    ["optout", "add", "+919812345678"], ["dnd", "add", "+919812345678"], ["ambiguous", "list"],
])
def test_list_commands_create_the_database_on_a_fresh_install(tmp_path: Path,
                                                              argv: list[str]) -> None:
    """On a fresh install the lists can be loaded before the agent ever ran."""
    import subprocess
    import sys

    db = tmp_path / "fresh.db"
    done = subprocess.run([sys.executable, "-m", "agent.cli", argv[0], "--db", str(db), *argv[1:]],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert db.exists()
    if argv[0] == "optout":
        listed = subprocess.run([sys.executable, "-m", "agent.cli", "optout", "--db", str(db),
                                 "list"], capture_output=True, text=True, timeout=60)
        assert listed.stdout.startswith("+919812345678\t")


@pytest.mark.parametrize(("argv", "code"), [
    (["export", "--db", "{tmp}/none.db"], 1),  # the input is wrong: no such database
    (["optout", "--db", "{tmp}/no/such/dir/a.db", "add", "+919812345678"], 3),  # store can't open
    (["optout", "--db", "{tmp}/a.db", "add", "12"], 1),  # not a phone number
    (["ambiguous", "--db", "{tmp}/a.db", "drop", "nope"], 1),
    (["dnd", "--db", "{tmp}/a.db", "import", "{tmp}/missing.csv"], 3),
])
def test_cli_errors_are_whole_lines_with_the_documented_exit_code(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    import subprocess
    import sys

    cmd = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-m", "agent.cli", "--log-level", "warning", *cmd],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stderr and done.stderr.endswith("\n")
    assert all(line.startswith("aftercall: ") for line in done.stderr.splitlines()), done.stderr


async def test_export_and_report_speak_the_operators_time_zone(
    store: SqliteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """UTC columns stay; local columns are added; days and the span are the operator's."""
    import asyncio
    from dataclasses import replace
    from datetime import UTC, datetime

    from web_helpers import BASE

    from agent.cli import build_parser, execute
    from agent.models import MessageState

    late = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)  # 01:30 on 2 May in Kolkata
    row, _ = await store.insert_message(replace(BASE, call_id="c1"), state=MessageState.SUPPRESSED,
                                        now=late, reason="dnd", detail="on the DND list")
    parser = build_parser()

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return execute(args)

    db = str(store.path)
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults:\n  timezone: Asia/Kolkata\n")
    assert await asyncio.to_thread(run, "export", "--db", db, "--rules", str(rules)) == 0
    (out,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert out["created_at"] == "2024-05-01T20:00:00.000000Z"
    assert out["created_at_local"] == "2024-05-02T01:30:00+05:30"
    assert out["detail"] == "on the DND list" and out["reason"] == "dnd"
    # A bare date means that day in the operator's zone: 2 May (local) holds the message.
    assert await asyncio.to_thread(run, "export", "--db", db, "--tz", "Asia/Kolkata",
                                   "--since", "2024-05-02", "--format", "json") == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [row.id]
    assert await asyncio.to_thread(run, "export", "--db", db, "--tz", "UTC",
                                   "--since", "2024-05-02", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert await asyncio.to_thread(run, "report", "--db", db, "--tz", "Asia/Kolkata",
                                   "--format", "json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert [d["day"] for d in rep["by_day"]] == ["2024-05-02"]
    assert rep["timezone"] == "Asia/Kolkata"
    assert await asyncio.to_thread(run, "report", "--db", db, "--tz", "Asia/Kolkata",
                                   "--since", "2024-05-02") == 0
    assert "2024-05-02T00:00:00+05:30 .. now (Asia/Kolkata)" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "report", "--db", db, "--tz", "Mars/Base") == 1
    assert "--tz: unknown timezone 'Mars/Base'" in capsys.readouterr().err


async def test_export_csv_cells_can_not_run_as_formulas_or_reach_the_terminal(
    store: SqliteStore,
) -> None:
    """Texts that start with a caller's name (issue #19, finding 11)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from web_helpers import BASE, sent

    at = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    hostile = ['=HYPERLINK("http://evil.example","Invoice")', "+1+cmd|' /C calc'!A0",
               "-2+3", "@SUM(A1:A9)", "Hi \x1b[2J\x1b]0;pwned\x07 there", "\u202eevil"]
    for i, text in enumerate(hostile):
        await sent(store, replace(BASE, call_id=f"c{i}", text=text), at)
    out = await export_messages(store, None, "csv")
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    rows = list(csv.DictReader(io.StringIO(out)))
    texts = sorted(r["text"] for r in rows)
    for t in texts:
        assert not t.startswith(("=", "+", "-", "@")), t
    assert "'=HYPERLINK(\"http://evil.example\",\"Invoice\")" in texts
    assert "Hi \\x1b[2J\\x1b]0;pwned\\x07 there" in texts
    assert {r["number"] for r in rows} == {"+919812345678"}  # numbers are left as numbers
