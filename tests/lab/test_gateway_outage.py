"""The SMS gateway down while calls keep coming, then back, on the lab: nothing lost, nothing
sent twice, the backlog drained at the configured TPS, and messages whose calls grew older
than max_age during the outage marked expired instead of sent late."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.lab import sipp
from devkit.harness import busy_line_rule, handset, rules_with, running_loop
from agent.models import MessageState
from agent.sim.main import start_sim

pytestmark = pytest.mark.lab

TPS = 5
MAX_AGE_S = 10  # of the busy line's rule; missed-call-sorry keeps rules.yaml's 10m


def outage_rules(workdir: Path) -> Path:
    """rules.yaml with a slow SMSC (5 TPS), no backup gateway (this test is about riding out
    the primary's outage, not failover), and a rule with a short max_age for the busy line."""
    return rules_with(workdir, ("    tps: 50\n", f"    tps: {TPS}\n"),
                      ("    backup: backup\n", ""), first_rule=busy_line_rule(MAX_AGE_S))


async def busy_calls(callers: list[str]) -> None:
    results = await asyncio.gather(*(sipp.place_call(sipp.REFUSED, sipp.DID_BUSY, caller=c)
                                     for c in callers))
    assert all(r.returncode in (0, 1) for r in results), [r.output for r in results]


async def abandoned_calls(callers: list[str], at_once: int = 5) -> None:
    for i in range(0, len(callers), at_once):  # a few at a time: two shared cores
        results = await asyncio.gather(*(
            sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=c, duration_ms=300)
            for c in callers[i:i + at_once]))
        assert all(r.ok for r in results), [r.output[-1500:] for r in results if not r.ok]


async def test_gateway_down_then_back(tmp_path: Path, lab) -> None:
    early = [f"+9198110004{i:02d}" for i in range(3)]
    late = [f"+9198110005{i:02d}" for i in range(20)]
    async with running_loop(tmp_path, rules=outage_rules(tmp_path)) as loop:
        smpp_port, http_port = loop.sim.smpp_port, loop.sim.http_port
        await loop.sim.stop()  # the SMSC goes away: connection refused from now on

        def rows_for(rows, callers):  # type: ignore[no-untyped-def]
            return [r for r in rows if r.number in callers]

        await busy_calls(early)
        # The early calls pass max_age while the gateway is still down: marked, never sent.
        rows = await loop.wait_rows(lambda rs: len(rows_for(rs, early)) == 3 and all(
            r.state is MessageState.EXPIRED for r in rows_for(rs, early)),
            timeout=MAX_AGE_S + 20)
        assert {(r.rule, r.reason) for r in rows_for(rows, early)} == {("busy-sorry", "expiry")}
        assert all(r.submitted_at is None for r in rows_for(rows, early))

        await abandoned_calls(late)
        rows = await loop.wait_rows(lambda rs: len(rows_for(rs, late)) == len(late) and all(
            r.state is MessageState.QUEUED and r.reason == "retry" for r in rows_for(rs, late)))
        assert not loop.agent.gateways["smsc"].healthy
        # Tried and rescheduled, yet never claimed: a crash now would resend them, not leave
        # them ambiguous, since nothing reached an SMSC.
        assert all(r.attempts == 0 for r in rows_for(rows, late))

        sim = await start_sim(smpp_port=smpp_port, http_port=http_port)  # back, same address
        loop.sim = sim
        rows = await loop.wait_rows(lambda rs: all(
            r.state is MessageState.DELIVERED for r in rows_for(rs, late)), timeout=40)

        got = [m for c in late for m in handset(sim, c)]
        assert sorted(m.dest.lstrip("+") for m in got) == sorted(c[1:] for c in late)  # once each
        assert all(loop.handset(c) == [] for c in early)
        # Paced at the configured TPS (GCRA lets one extra through at the start).
        times = sorted(m.received_at for m in got)
        span = (times[-1] - times[0]).total_seconds()
        assert span >= (len(got) - 2) / TPS * 0.95  # 5%: the TPS budget, and timer jitter
        for i in range(len(times) - TPS - 1):
            window = (times[i + TPS + 1] - times[i]).total_seconds()
            assert window >= 1.0 * 0.95, f"more than {TPS + 1} submits in {window:.2f}s"
        # Nothing counted against the attempts limit while the SMSC was unreachable.
        assert all(r.reason not in ("retries_exhausted",) for r in rows)
