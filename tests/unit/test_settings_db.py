"""``--db``: a SQLite file or a PostgreSQL URL, and what each means for the agent."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.app import AfterCallAgent
from agent.gateways.build import webhook_secret
from agent.errors import ConfigError
from agent.settings import Settings, add_common_args
from agent.store.postgres import PostgresStore
from agent.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]


def settings(*argv: str) -> Settings:
    p = argparse.ArgumentParser()
    add_common_args(p)
    return Settings.from_args(p.parse_args(list(argv)))


def test_a_url_stays_a_url_and_its_password_stays_out_of_repr() -> None:
    s = settings("--db", "postgresql://agent:pw-123@db.example:5433/aftercall",
                 "--http", "127.0.0.1:8081")
    assert s.db == "postgresql://agent:pw-123@db.example:5433/aftercall"
    assert "pw-123" not in repr(s)
    assert s.agent_name.endswith(":8081")  # stable across restarts by default
    assert settings("--db", "x/aftercall.db").db == Path("x/aftercall.db")
    assert settings("--agent-name", "pbx1-a").agent_name == "pbx1-a"


def test_the_agent_picks_its_store_from_db(tmp_path: Path) -> None:
    url = "postgresql://agent@127.0.0.1:1/aftercall"
    pg = AfterCallAgent(Settings(ami_secret="x", rules=REPO / "rules.yaml", db=url,
                                 agent_name="a", webhook_secret="shared"))
    assert isinstance(pg.store, PostgresStore) and pg.store.owner == "a"
    lite = AfterCallAgent(Settings(ami_secret="x", rules=REPO / "rules.yaml",
                                   db=tmp_path / "a.db"))
    assert isinstance(lite.store, SqliteStore)


def test_agents_sharing_postgresql_need_one_webhook_secret(tmp_path: Path) -> None:
    url = "postgresql://agent@127.0.0.1:1/aftercall"
    with pytest.raises(ConfigError, match="AFTERCALL_WEBHOOK_SECRET"):
        webhook_secret(Settings(db=url))
    assert webhook_secret(Settings(db=url, webhook_secret="s")) == "s"
    assert webhook_secret(Settings(db=tmp_path / "a.db"))  # SQLite: kept beside the file
