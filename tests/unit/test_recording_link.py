"""Recording links, rules level: the schema (secret, source), the merge tag ({{ recording_link }}
is a tracked short link to a signed, expiring URL), the signer, and the tracker keeping
MixMonitor's file name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.ami.transcript import iter_messages
from agent.calls.tracker import CallTracker
from agent.errors import RulesError
from agent.models import CallRecord, Direction, Disposition
from agent.rules.engine import decide
from agent.rules.loader import load_rules_text
from agent.sms.links import PendingLinks
from agent.sms.recording import RECORDING_VAR, RecordingSigner, Verdict

SECRET = "s3cr3t-recording-key-0123456789"
NOW = datetime(2025, 8, 14, 6, 0, tzinfo=UTC)

DOC = """\
version: 1
defaults:
  region: IN
  sender_id: ACMECO
  gateway: smsc
  public_base_url: https://acme.in
  {recordings}
gateways: {{smsc: {{type: smpp, host: h, system_id: x}}}}
templates:
  t:
    text: "Thanks for calling.{{% if recording_link is defined %}} Your call: {{{{ recording_link }}}}{{% endif %}}"
    max_segments: 1
rules:
  - name: r
    send: {{to: caller, template: t}}
"""


def rules(recordings: str) -> object:
    return load_rules_text(DOC.format(recordings=recordings), env={"REC_SECRET": SECRET})


def test_schema_refusals_never_show_the_secret(tmp_path: Path) -> None:
    for bad, says in [
        (f"recordings: {{dir: /rec, secret: '${{REC_SECRET}}', secret_file: {tmp_path}/k}}",
         "not both"),
        ("recordings: {secret: x}", "one of dir"),
        ("recordings: {dir: /rec, url: 'https://f/{file}', secret: '${REC_SECRET}'}", "one of dir"),
        ("recordings: {dir: /rec, secret: short-one}", "at least 16 bytes"),
        (f"recordings: {{dir: /rec, secret_file: {tmp_path}/absent}}", "cannot read it"),
        ("recordings: {url: 'https://f/x', secret: '${REC_SECRET}'}", "recordings.url"),
        ("recordings: {dir: /rec, secret: '${REC_SECRET}', ttl: 1000d}", "ttl"),
    ]:
        with pytest.raises(RulesError) as exc:
            rules(bad)
        assert says in str(exc.value) and SECRET not in str(exc.value), bad
    # The merge tag needs the section.
    with pytest.raises(RulesError) as exc:
        rules("")
    assert "recording_link needs defaults.recordings" in str(exc.value)
    key = tmp_path / "rec.key"
    key.write_text(SECRET + "\n")
    rs = rules(f"recordings: {{dir: /rec, secret_file: {key}}}")
    assert rs.defaults.recordings.signer("https://acme.in").secret == SECRET.encode()  # type: ignore[attr-defined]
    assert SECRET not in repr(rs.defaults)  # type: ignore[attr-defined]
    # No key given: a random one until the running agent gives its own.
    own = rules("recordings: {dir: /rec}").defaults.recordings  # type: ignore[attr-defined]
    assert own.needs_agent_key and len(own.signer("https://acme.in").secret) == 32


def test_the_agents_own_key_is_kept_beside_the_database(tmp_path: Path) -> None:
    from agent.errors import ConfigError
    from agent.settings import Settings
    from agent.web.recordings import recording_access, recording_secret

    settings = Settings(ami_secret="x", db=tmp_path / "a.db")
    first = recording_secret(settings)
    key = tmp_path / "a.db.recording-secret"
    assert key.stat().st_mode & 0o777 == 0o600 and len(first) >= 32
    assert recording_secret(settings) == first  # links sent before a restart still open
    rs = rules("recordings: {dir: /rec}")
    access = recording_access(rs.defaults, settings)  # type: ignore[attr-defined]
    assert access is not None and access.signer.secret == first.encode()
    # The engine signs with the same key: it is the rules' own object.
    assert rs.defaults.recordings.signer("https://acme.in").secret == first.encode()  # type: ignore[attr-defined]
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        recording_secret(settings)
    # Agents sharing PostgreSQL sign alike, from their shared webhook secret; without one
    # the links are left out of texts (and said at start), never signed with a lone key.
    pg = Settings(ami_secret="x", db="postgresql://u@h/db")
    assert recording_secret(pg) is None
    shared = Settings(ami_secret="x", db="postgresql://u@h/db", webhook_secret="w" * 32)
    assert recording_secret(shared) == recording_secret(shared) != recording_secret(
        Settings(ami_secret="x", db="postgresql://u@h/db", webhook_secret="v" * 32))
    off = rules("recordings: {dir: /rec}")
    assert recording_access(off.defaults, pg) is None  # type: ignore[attr-defined]
    call = CallRecord(call_id="9", caller="+919811000101", ended_at=NOW,
                      disposition=Disposition.ANSWERED, vars={RECORDING_VAR: "/m/9.wav"})
    [d] = decide(off, call, now=NOW, link=PendingLinks("https://acme.in"))  # type: ignore[arg-type]
    assert d.text == "Thanks for calling." and d.links == ()


def test_the_text_carries_a_tracked_link_to_a_signed_url() -> None:
    rs = rules("recordings: {dir: /var/spool/asterisk/monitor, secret: '${REC_SECRET}', ttl: 2d}")
    call = CallRecord(call_id="1755151200.7", caller="+919811000101",
                      direction=Direction.INBOUND, disposition=Disposition.ANSWERED,
                      ended_at=NOW,
                      vars={RECORDING_VAR: "/var/spool/asterisk/monitor/in-1755151200.7.wav"})
    links = PendingLinks("https://acme.in", code=lambda: "Abc123XYZ0")
    [d] = decide(rs, call, now=NOW, link=links)  # type: ignore[arg-type]
    assert d.text == "Thanks for calling. Your call: https://acme.in/l/Abc123XYZ0"
    [short] = d.links
    signer = rs.defaults.recordings.signer("https://acme.in")  # type: ignore[attr-defined]
    prefix = "https://acme.in/rec/1755151200.7/"
    assert short.url.startswith(prefix) and short.url.endswith("/in-1755151200.7.wav")
    expires, sig, name = short.url[len(prefix):].split("/")
    assert int(expires) == int((NOW + timedelta(days=2)).timestamp())
    assert signer.check("1755151200.7", expires, sig, name, NOW) is Verdict.OK
    # No recording on the call: the template's fallback, no link.
    [d] = decide(rs, CallRecord(call_id="2", caller="+919811000101", ended_at=NOW,
                                disposition=Disposition.ANSWERED), now=NOW,
                 link=PendingLinks("https://acme.in"))  # type: ignore[arg-type]
    assert d.text == "Thanks for calling." and d.links == ()


def test_signer_refuses_tampering_and_expired_links() -> None:
    s = RecordingSigner(SECRET.encode(), "https://acme.in", timedelta(hours=1))
    url = s.url("c1", "/mon/a.wav", NOW)
    assert url is not None
    cid, exp, sig, name = url.split("/rec/")[1].split("/")
    assert s.check(cid, exp, sig, name, NOW) is Verdict.OK
    assert s.check("c2", exp, sig, name, NOW) is Verdict.BAD
    assert s.check(cid, str(int(exp) + 3600), sig, name, NOW) is Verdict.BAD
    assert s.check(cid, exp, sig, "b.wav", NOW) is Verdict.BAD
    assert s.check(cid, exp, sig[:-1] + ("A" if sig[-1] != "A" else "B"), name, NOW) is Verdict.BAD
    assert s.check(cid, exp, sig, name, NOW + timedelta(hours=1)) is Verdict.EXPIRED
    other = RecordingSigner(b"another-secret-0123456789", "https://acme.in", timedelta(hours=1))
    assert other.check(cid, exp, sig, name, NOW) is Verdict.BAD
    for odd in ("/mon/", "", None, "a b.wav", "/mon/..", ".hidden"):
        assert s.url("c1", odd, NOW) is None, odd
    # Only the file's name travels: a path never does.
    assert s.url("c1", "../../etc/passwd", NOW).endswith("/passwd")  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        RecordingSigner(b"short", "https://acme.in", timedelta(hours=1))


def test_tracker_keeps_mixmonitors_file_name() -> None:
    data = (Path(__file__).resolve().parents[1] / "fixtures" / "ami"
            / "answered_agent_hangup.txt").read_bytes()
    lid = "aftercall-lab-1795937511.24"
    head, sep, tail = data.rpartition(b"Event: Hangup\r\n")
    varset = (f"Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/trunk-00000018\r\n"
              f"Uniqueid: {lid}\r\nLinkedid: {lid}\r\nVariable: MIXMONITOR_FILENAME\r\n"
              f"Value: /var/spool/asterisk/monitor/{lid}.wav\r\n\r\n").encode()
    tracker = CallTracker(region="IN")
    out = []
    for msg in iter_messages(head + varset + sep + tail):
        out.extend(tracker.feed(msg))
    [record] = [r for r in out if r.trigger.value == "call_completed"]
    assert record.vars[RECORDING_VAR] == f"/var/spool/asterisk/monitor/{lid}.wav"
