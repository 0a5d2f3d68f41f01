"""`aftercall doctor` on an agent that watches several PBXs (rules.yaml ``pbxes:``): each PBX
is examined on its own link, TLS where the entry says so, under its own heading; one PBX
that does not answer is a FIX for that PBX alone. And doctor never sends a secret where
`aftercall run` would refuse to (plain-text AMI to a remote host)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from fake_ami import StartPbx

from agent.commands.doctor import examine, report
from agent.settings import Settings
from devkit.harness import pbxes_section, rules_with


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the certificate a client must trust for it."""
    key, cert = tmp_path / "ami.key", tmp_path / "ami.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sections(text: str) -> dict[str, str]:
    """The report cut at its ``== PBX name`` headings."""
    out: dict[str, str] = {}
    for chunk in text.split("== PBX ")[1:]:
        name, _, body = chunk.partition(":")
        out[name] = body
    return out


async def test_each_pbx_is_examined_on_its_own_link(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     fake_pbx: StartPbx) -> None:
    server_ctx, cert = _tls(tmp_path)
    plain, secure = await fake_pbx("blr-s3cret"), await fake_pbx("del-s3cret", tls=server_ctx)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this test's certificate
    down = _closed_port()
    rules = rules_with(tmp_path)
    rules.write_text(rules.read_text() + pbxes_section(tmp_path, {
        "blr": {"port": plain.port, "secret": plain.secret},
        "del": {"port": secure.port, "tls": True, "secret": secure.secret},
        "hyd": {"port": down, "secret": "x"}}))
    findings = await examine(Settings(rules=rules), etc=tmp_path / "no-etc", last=2, listen=0.1)
    text, code = report(findings)
    parts = _sections(text)
    assert list(parts) == ["blr", "del", "hyd"], text
    assert f"127.0.0.1:{secure.port} over TLS" in text
    for name in ("blr", "del"):
        assert "logged in as 'aftercall'" in parts[name], text
        assert "FIX" not in parts[name], text
    assert plain.logins == 1 and secure.logins == 1
    assert "FIX" in parts["hyd"] and "does not answer" in parts["hyd"], text
    assert code == 1
    assert "s3cret" not in text


async def test_plain_ami_to_a_remote_host_is_refused_before_any_secret_is_sent(
        tmp_path: Path) -> None:
    settings = Settings(rules=rules_with(tmp_path), ami_host="192.0.2.10",
                        ami_secret="never-in-clear")
    findings = await examine(settings, etc=tmp_path, last=1, listen=0.1)
    text, code = report(findings)
    assert code == 1
    (fix,) = [f for f in findings if f.level == "FIX"]
    assert "plain-text" in fix.text or "tls" in fix.text.lower(), text
    assert "never-in-clear" not in text
