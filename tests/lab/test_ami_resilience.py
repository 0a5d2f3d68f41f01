"""The agent keeps tracking through an Asterisk restart and a cut AMI TCP connection, and
recovers from Asterisk's CDR the calls that ended while AMI was away."""

from __future__ import annotations

import asyncio

import pytest

from agent.lab import sipp
from devkit.harness import rules_with, running_loop, until
from agent.models import MessageState, Trigger

pytestmark = pytest.mark.lab


class CuttableProxy:
    """A TCP proxy in front of AMI that the test can cut, like a firewall dropping the flow."""

    def __init__(self, target_port: int = 5038) -> None:
        self.target_port = target_port
        self.blocked = False
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.accepted = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        if self.blocked:
            writer.close()
            return
        self.accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_w]

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        self.server.close()


def _sorry(rows, number):
    return [r for r in rows if r.number == number and r.rule == "missed-call-sorry"]


async def test_cut_connection_reconnects_and_the_gap_is_recovered_from_cdr(tmp_path, lab):
    proxy = CuttableProxy()
    port = await proxy.start()
    async with running_loop(tmp_path, ami_port=port, cdr=True) as loop:
        # While AMI is cut (and stays refused), a call starts and ends unseen.
        proxy.blocked = True
        proxy.cut()
        await until(lambda: not loop.agent.ami.connected)
        gap_caller = "+919811000031"
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=gap_caller,
                                  duration_ms=500)
        assert r.ok
        proxy.blocked = False
        await until(lambda: loop.agent.ami.stats.logins >= 2)
        rows = await loop.wait_rows(lambda rs: any(r.state is MessageState.DELIVERED
                                                   for r in _sorry(rs, gap_caller)))
        (row,) = _sorry(rows, gap_caller)
        call = await loop.agent.store.get_call(row.call_id, pbx="default")
        assert call.vars.get("aftercall_source") == "cdr"
        # And live tracking goes on after the reconnect.
        live_caller = "+919811000032"
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=live_caller,
                                  duration_ms=500)
        assert r.ok
        rows = await loop.wait_rows(lambda rs: bool(_sorry(rs, live_caller)))
        # The row is written before the submit: wait for the handset, then count.
        await until(lambda: len(loop.handset(live_caller)) >= 1)
        assert len(loop.handset(gap_caller)) == 1 and len(loop.handset(live_caller)) == 1
    await proxy.close()


async def test_asterisk_restart_is_survived(tmp_path, lab):
    async with running_loop(tmp_path, cdr=True) as loop:
        logins = loop.agent.ami.stats.logins
        await asyncio.to_thread(lab.cli, "core restart now")
        await until(lambda: loop.agent.ami.stats.logins > logins, timeout=30)
        caller = "+919811000033"
        r = await sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=caller, duration_ms=500)
        assert r.ok, r.output
        rows = await loop.wait_rows(lambda rs: any(r.state is MessageState.DELIVERED
                                                   for r in _sorry(rs, caller)))
        # One row, one SMS: the reconnect's resync and CDR pass sent nothing twice.
        assert len(_sorry(rows, caller)) == 1
        assert len(loop.handset(caller)) == 1


async def calls_up(lab, k: int) -> None:
    """Asterisk itself says ``k`` calls are up (the agent may not be listening)."""
    def count() -> int:
        out = lab.cli("core show channels count")
        return int(next((ln.split()[0] for ln in out.splitlines() if "active call" in ln), 0))

    async def poll() -> None:
        while await asyncio.to_thread(count) < k:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), 10)


async def test_stream_of_calls_through_a_cut_and_a_restart(tmp_path, lab):
    """Calls keep coming while the AMI link is cut, while it comes back with calls up, and
    across `core restart now`: every call that completed gets exactly its one SMS."""
    proxy = CuttableProxy()
    port = await proxy.start()
    n = iter(range(100))

    def callers(k: int) -> list[str]:
        return [f"+9198110007{next(n):02d}" for _ in range(k)]

    async def pair(numbers: list[str], ms: int = 400) -> list[bool]:
        rs = await asyncio.gather(*(sipp.place_call(sipp.TALK, sipp.DID_BILLING, caller=c,
                                                    duration_ms=ms) for c in numbers))
        return [r.ok for r in rs]

    must: list[str] = []  # calls that completed normally: exactly one SMS each
    torn: list[str] = []  # calls Asterisk tore down in its restart: at most one
    async with running_loop(tmp_path, ami_port=port, cdr=True) as loop:
        live = callers(2)
        assert all(await pair(live))
        must += live

        proxy.blocked = True  # AMI cut; calls go on unseen
        proxy.cut()
        await until(lambda: not loop.agent.ami.connected)
        gap = callers(2)
        assert all(await pair(gap))
        must += gap

        spanning = callers(2)  # up when the link returns: adopted by resync
        up = asyncio.create_task(pair(spanning, ms=3000))
        await calls_up(lab, 2)
        proxy.blocked = False
        await until(lambda: loop.agent.ami.stats.logins >= 2)
        assert all(await up)
        must += spanning

        logins = loop.agent.ami.stats.logins
        doomed = callers(2)
        up = asyncio.create_task(pair(doomed, ms=4000))
        await calls_up(lab, 2)
        await asyncio.to_thread(lab.cli, "core restart now")
        await up
        torn += doomed
        await until(lambda: loop.agent.ami.stats.logins > logins, timeout=30)

        after = callers(2)
        assert all(await pair(after))
        must += after

        await loop.wait_rows(lambda rs: all(
            any(r.state is MessageState.DELIVERED for r in _sorry(rs, c)) for c in must),
            timeout=30)
        rows = await loop.messages(newest_first=False)
        for c in must:
            assert len(_sorry(rows, c)) == 1 and len(loop.handset(c)) == 1, c
        for c in torn:
            assert len(_sorry(rows, c)) <= 1 and len(loop.handset(c)) <= 1, c
        assert len({r.call_id for r in rows}) == len(rows)  # one message per call here
    await proxy.close()


async def test_a_call_that_ends_during_a_cut_is_judged_by_the_cdr_not_by_a_guess(tmp_path, lab):
    """The tracker saw the answer, then the link went down and the caller hung up 3.5 s into
    the call. From what it saw, the call talked for well under a second; Master.csv says 3 s.
    The rule (talk >= 2 s) must get the CDR's answer."""
    rules = rules_with(tmp_path, first_rule=(
        '  - name: direct-call-feedback\n    match: {did: ["%s"], disposition: [answered],'
        ' min_talk: 2s}\n    send: {to: caller, template: feedback}\n' % sipp.DID_DIRECT))
    proxy = CuttableProxy()
    port = await proxy.start()
    caller = "+919811000051"
    async with running_loop(tmp_path, rules=rules, ami_port=port, cdr=True) as loop:
        call = asyncio.create_task(sipp.place_call(sipp.TALK, sipp.DID_DIRECT, caller=caller,
                                                   duration_ms=3500))
        await until(lambda: any(r.caller == caller and r.trigger is Trigger.CALL_CONNECTED
                                 for r in loop.records))
        proxy.blocked = True
        proxy.cut()
        await until(lambda: not loop.agent.ami.connected)
        assert (await call).ok
        proxy.blocked = False
        await until(lambda: loop.agent.ami.stats.logins >= 2)
        rows = await loop.wait_rows(lambda rs: any(
            r.rule == "direct-call-feedback" and r.state is MessageState.DELIVERED for r in rs))
        [row] = [r for r in rows if r.number == caller]
        saved = await loop.agent.store.get_call(row.call_id, pbx="default")
        assert saved is not None and saved.vars.get("aftercall_source") == "cdr"
        assert saved.talk_seconds >= 3
        assert len(loop.handset(caller)) == 1
    await proxy.close()


async def test_callers_who_reach_nobody_read_the_same_live_and_recovered_from_the_cdr(
        tmp_path, lab):
    # A caller who hangs up during the greeting after Answer(), and one in a queue whose only
    # member is paused: once while AMI is cut (recovered from Master.csv, where Asterisk wrote
    # ANSWERED for its own Answer()), once live. Same record either way, one text each.
    proxy = CuttableProxy()
    port = await proxy.start()
    dids = {"greeting": sipp.DID_GREETING, "queue": sipp.DID_QUEUE_WAIT}
    gap = {"greeting": "+919811000041", "queue": "+919811000042"}
    live = {"greeting": "+919811000043", "queue": "+919811000044"}
    async with running_loop(tmp_path, ami_port=port, cdr=True) as loop:
        proxy.blocked = True
        proxy.cut()
        await until(lambda: not loop.agent.ami.connected)
        for what, number in gap.items():
            assert (await sipp.place_call(sipp.TALK, dids[what], caller=number,
                                          duration_ms=1500)).ok
        proxy.blocked = False
        await until(lambda: loop.agent.ami.stats.logins >= 2)
        for what, number in live.items():
            assert (await sipp.place_call(sipp.TALK, dids[what], caller=number,
                                          duration_ms=1500)).ok
        numbers = [*gap.values(), *live.values()]
        rows = await loop.wait_rows(lambda rs: all(
            any(r.state is MessageState.DELIVERED for r in _sorry(rs, n)) for n in numbers))
        seen = {}
        for n in numbers:
            (row,) = _sorry(rows, n)
            call = await loop.agent.store.get_call(row.call_id, pbx=row.pbx)
            seen[n] = (call.disposition.value, call.talk_seconds, call.agent, call.answered_at,
                       [t for t in call.tags if t.startswith("left_in_")],
                       call.vars.get("aftercall_source"))
        for what, tag in (("greeting", "left_in_ivr"), ("queue", "left_in_queue")):
            assert seen[gap[what]] == ("abandoned", 0.0, None, None, [tag], "cdr")
            assert seen[live[what]] == ("abandoned", 0.0, None, None, [tag], None)
        await until(lambda: all(len(loop.handset(n)) >= 1 for n in numbers))
        assert [len(loop.handset(n)) for n in numbers] == [1, 1, 1, 1]
    await proxy.close()
