"""Files with secrets or personal data: real modes on real files (issue #19, finding 12)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.gateways.build import webhook_secret
from agent.errors import ConfigError, RulesError
from agent.models import InboundSms
from agent.rules.loader import load_rules_text
from agent.settings import Settings
from agent.store.sqlite import SqliteStore


@pytest.fixture
def lax_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: files come out 0644 unless asked otherwise
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


async def test_database_wal_and_shm_are_private(tmp_path: Path, lax_umask: None) -> None:
    db = tmp_path / "a.db"
    async with SqliteStore(db) as store:
        await store.add_reply(InboundSms("g", "+919812345678", "ACME", "hi",
                                         datetime.now(UTC)))
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert p.exists() and mode(p) == 0o600, (p, oct(mode(p)))


async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path,
                                                               lax_umask: None) -> None:
    db = tmp_path / "old.db"
    async with SqliteStore(db):
        pass
    os.chmod(db, 0o644)
    async with SqliteStore(db):
        assert mode(db) == 0o640  # others lose access; a group the operator chose keeps it


def _settings(tmp_path: Path) -> Settings:
    return Settings(db=tmp_path / "a.db")


def test_webhook_secret_file_is_created_private_and_refused_when_not(tmp_path: Path,
                                                                     lax_umask: None) -> None:
    s = _settings(tmp_path)
    secret = webhook_secret(s)
    path = Path(f"{s.db}.webhook-secret")
    assert mode(path) == 0o600 and webhook_secret(s) == secret
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="mode 0644") as e:
        webhook_secret(s)
    assert secret not in str(e.value)
    os.chmod(path, 0o600)
    if os.geteuid() == 0:  # only root can give a file away; as root the check still applies
        os.chown(path, 65534, 65534)
        with pytest.raises(ConfigError, match="owned by another user"):
            webhook_secret(s)


RULES = """\
version: 1
defaults: {{region: IN, sender_id: ACME, gateway: g}}
templates: {{t: {{text: "{text}"}}}}
rules:
  - {{name: all, send: {{to: caller, template: t}}}}
gateways:
  g: {{type: http, preset: kannel, url: "{url}", username: u, password: p}}
"""


@pytest.mark.parametrize(("text", "url", "where"), [
    ("Your code is ${SECRET}", "http://127.0.0.1:13013/x", "templates.t.text"),
    ("hi", "http://127.0.0.1:13013/x/${SECRET}", "gateways.g.url"),
    ("hi", "http://127.0.0.1:13013/x?k=${SECRET}", "gateways.g.url"),
])
def test_environment_references_where_a_secret_would_leak_are_refused(
    text: str, url: str, where: str
) -> None:
    with pytest.raises(RulesError) as e:
        load_rules_text(RULES.format(text=text, url=url), env={"SECRET": "hunter2"})
    assert where in str(e.value) and "hunter2" not in str(e.value)
    ok = load_rules_text(RULES.format(text="Pay $$5", url="http://127.0.0.1:${PORT}/x"),
                         env={"PORT": "13013"})
    assert ok.config.templates["t"].text == "Pay $5"


def test_gateway_errors_at_run_never_print_the_values(tmp_path: Path) -> None:
    rs = load_rules_text(RULES.format(text="hi", url="http://127.0.0.1:13013/x"), env={})
    gw = rs.config.gateways["g"]
    with pytest.raises(ConfigError) as e:
        gw.bound("g", "ftp://hunter2@agent.example", lambda: "whsec-hunter3")  # type: ignore[union-attr]
    assert "callback_base" in str(e.value)
    assert "hunter2" not in str(e.value) and "hunter3" not in str(e.value)


def test_ami_secret_file_others_could_write_is_refused(tmp_path: Path) -> None:
    from agent.settings import read_secret_file

    path = tmp_path / "ami_secret"
    path.write_text("s3cret\n")
    os.chmod(path, 0o600)
    assert read_secret_file(path, "AMI secret file", strict=False) == "s3cret"
    os.chmod(path, 0o644)  # readable by others: accepted (a mounted secret), with a warning
    assert read_secret_file(path, "AMI secret file", strict=False) == "s3cret"
    for lax in (0o664, 0o646):
        os.chmod(path, lax)
        with pytest.raises(ConfigError, match=f"mode {lax:04o}") as e:
            read_secret_file(path, "AMI secret file", strict=False)
        assert "s3cret" not in str(e.value)
