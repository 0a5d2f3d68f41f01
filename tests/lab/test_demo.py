"""`make demo` on the lab, as CI runs it (no terminal): calls, the log, the report, a customer's
"C" reply answered by the agent, the dashboard's address at the end, and nothing left waiting."""

from __future__ import annotations

import pytest

from devkit import demo

pytestmark = pytest.mark.lab


async def test_demo_runs_through_and_shows_a_customer_reply(tmp_path, lab, capsys) -> None:
    assert await demo.demo(tmp_path / "demo", interactive=False) == 0
    out = capsys.readouterr().out
    assert 'the customer +91******0104 replies "C" from the handset' in out
    assert '... and gets back: "Your appointment is cancelled.' in out
    # Numbers inside texts are masked in the printed SMS log (the agent's summary quotes one).
    summary = [line for line in out.splitlines()
               if line.startswith("agent-summary") and "Call from" in line]
    assert summary and all("+91******" in line and "+9198" not in line for line in summary)
    lines = out.splitlines()  # (the agent's own log lines are interleaved: no logging set-up)
    (end,) = [i for i, line in enumerate(lines) if line.startswith("dashboard was http://")]
    assert lines[end].endswith("; cleaning up")
    assert end > max(i for i, line in enumerate(lines) if "gets back" in line)
    assert "Press Enter" not in out  # without a terminal nothing waits for a person
