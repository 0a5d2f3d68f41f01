"""One running agent per name on a shared PostgreSQL (store/postgres/names.py): a second agent
started with a name in use is refused at start, naming where the first runs; a restart, even
after kill -9, is not refused for its own past."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.store.postgres import PostgresStore
from devkit.harness import until

REPO = Path(__file__).resolve().parents[2]


async def test_a_second_agent_with_a_name_in_use_is_refused(pg_url: str) -> None:
    async with PostgresStore(pg_url, owner="blr-a") as first:
        await first.hold_name()
        second = await PostgresStore(pg_url, owner="blr-a").open()
        try:
            with pytest.raises(ConfigError) as info:
                await second.hold_name()
        finally:
            await second.close()
        said = str(info.value)
        assert "'blr-a' is in use by another running agent" in said, said
        assert "connected from" in said and "--agent-name" in said
        async with PostgresStore(pg_url, owner="blr-b") as other:
            await other.hold_name()  # another name is free
        async with PostgresStore(pg_url) as report:  # no name: a report, an export
            await report.hold_name()
    async with PostgresStore(pg_url, owner="blr-a") as restarted:  # the first has stopped
        await restarted.hold_name()


async def test_an_agent_killed_hard_leaves_its_name_free(pg_url: str) -> None:
    code = textwrap.dedent(f"""
        import asyncio, sys
        from agent.store.postgres import PostgresStore
        async def main():
            store = await PostgresStore({pg_url!r}, owner="blr-a").open()
            await store.hold_name()
            print("held", flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        async def held() -> bool:  # the log lines before it say the schema was made
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            assert line, "the agent ended before holding its name"
            return line.strip() == "held"

        await until(held, 30)
        store = await PostgresStore(pg_url, owner="blr-a").open()
        try:
            with pytest.raises(ConfigError):
                await store.hold_name()
            proc.kill()
            await asyncio.to_thread(proc.wait)

            async def free() -> bool:
                try:
                    await store.hold_name()
                except ConfigError:
                    return False
                return True

            await until(free, 10)
        finally:
            await store.close()
    finally:
        proc.kill()
        proc.wait()


async def test_an_agent_starting_with_a_name_in_use_stops_before_reading_anything(
        pg_url: str, tmp_path: Path) -> None:
    from agent.app import AfterCallAgent
    from agent.settings import Settings
    from devkit.harness import rules_with

    rules = rules_with(tmp_path)
    shared = "the-same-on-every-agent"
    first = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=pg_url, agent_name="blr-a",
                                    webhook_secret=shared))
    await first.open_store()
    try:
        second = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=pg_url,
                                         agent_name="blr-a", http_port=0, agi_port=0,
                                         webhook_secret=shared))
        with pytest.raises(ConfigError, match="'blr-a' is in use"):
            await second.run(asyncio.Event().wait)  # refused at its start: nothing to stop
    finally:
        await first.store.close()
