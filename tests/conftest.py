"""Shared fixtures. The lab (real Asterisk + SIPp phones) is started once per session when a
test asks for it, and stopped at the end if this session started it."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge behaviour, not speed: on a shared 2-core machine a single example can
# take longer than hypothesis's 200 ms default deadline without anything being wrong.
settings.register_profile(
    "aftercall", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("aftercall")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    from agent.lab.lab import Lab

    lab = Lab()
    was_running = lab.running()
    lab.up()
    yield lab
    if not was_running:
        lab.down()


@pytest.fixture(scope="module")
def phones(lab: object) -> Iterator[object]:
    from agent.lab.sipp import AgentPhones

    with AgentPhones(agent_hangup_ms=2000) as p:
        yield p


@pytest.fixture
def ami_secret(lab: object) -> str:
    return lab.secret()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A throwaway PostgreSQL cluster (Debian's postgresql, installed by ``make setup``) in this
    session's temp dir (a private one when root: see agent.lab.postgres), on a free loopback
    port; stopped and removed at the end."""
    from agent.lab.postgres import TempCluster

    with TempCluster.under(tmp_path_factory.mktemp("postgres")) as cluster:
        yield cluster


_pg_databases = itertools.count(1)


@pytest.fixture
def pg_url(pg_cluster: object) -> str:
    """A fresh, empty database in the session's cluster, for one test."""
    return pg_cluster.create_database(f"t{next(_pg_databases)}")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def year_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding a year of traffic, 100,000 messages ending now: made once per session
    (bulk inserts, ~10 s) through the store's schema; tests copy it before writing to it."""
    from agent.store.sqlite.synth import generate

    path = tmp_path_factory.mktemp("year") / "year.db"
    generate(path, messages=100_000, days=365)
    return path


@pytest.fixture
def year_copy(year_db: Path, tmp_path: Path) -> Path:
    """A private copy of ``year_db`` for a test that writes."""
    import shutil

    dst = tmp_path / "year.db"
    shutil.copyfile(year_db, dst)
    return dst


@pytest.fixture(autouse=True)
def _gateway_ports_env_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process agent tests point rules.yaml's ${SMPP_PORT}/${SIM_HTTP_PORT} at their own
    simulator by setting the variables; each test's end puts back what was there before it
    (a longer-lived fixture's value, or nothing), so no later test dials a stopped simulator."""
    for name in ("SMPP_PORT", "SIM_HTTP_PORT"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
