"""The recording endpoint: a signed, unexpired link gets the file (or the redirect); a made-up,
altered or expired one gets nothing, whoever asks; the secret never reaches the logs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from web_helpers import T0, MakeClient

from agent.sms.recording import RecordingSigner, call_ref
from agent.web.recordings import RecordingAccess

pytestmark = pytest.mark.sqlite_only

SECRET = b"s3cr3t-recording-key-0123456789"
SIGNER = RecordingSigner(SECRET, "https://acme.in", timedelta(days=1))


def _path(call_id: str, file: str) -> str:
    url = SIGNER.url(call_id, f"/var/spool/asterisk/monitor/{file}", T0)
    assert url is not None
    return url.removeprefix("https://acme.in")


async def test_signed_links_serve_the_file_and_nothing_else(make_client: MakeClient,
                                                           tmp_path: Path) -> None:
    (tmp_path / "call-1.wav").write_bytes(b"RIFF-one")
    (tmp_path / "call-2.wav").write_bytes(b"RIFF-two")
    now = [T0]
    client = await make_client(recordings=RecordingAccess(SIGNER, tmp_path, None),
                               clock=lambda: now[0], bound_to_loopback=False,
                               dashboard_token="tok")  # public like /l/: no token needed
    good = _path("1714.1", "call-1.wav")
    with structlog.testing.capture_logs() as logs:
        r = await client.get(good)
        assert r.status == 200 and await r.read() == b"RIFF-one"
        assert r.headers["Cache-Control"] == "private, no-store"
        _, rec, cid, exp, sig, name = good.split("/")
        for tampered in (f"/rec/1714.2/{exp}/{sig}/{name}",            # another call
                         f"/rec/{cid}/{exp}/{sig}/call-2.wav",          # another file
                         f"/rec/{cid}/{int(exp) + 86400}/{sig}/{name}",  # a longer life
                         f"/rec/{cid}/{exp}/{sig[:-2]}AA/{name}",       # a forged signature
                         f"/rec/{cid}/{exp}/unsigned/{name}"):          # no signature at all
            r = await client.get(tampered)
            assert r.status == 403, tampered
            assert b"RIFF" not in await r.read()
        # A signed name that is not in the directory; a path out of it never matches.
        r = await client.get(_path("1714.1", "gone.wav"))
        assert r.status == 404
        r = await client.get(f"/rec/{cid}/{exp}/{sig}/..%2F..%2Fetc%2Fpasswd")
        assert r.status in (403, 404)
        now[0] = T0 + timedelta(days=1)  # expiry enforced
        r = await client.get(good)
        assert r.status == 410 and b"RIFF" not in await r.read()
    shown = repr(logs)
    assert SECRET.decode() not in shown and sig not in shown


async def test_redirect_mode_and_unconfigured(make_client: MakeClient) -> None:
    client = await make_client(recordings=RecordingAccess(
        SIGNER, None, "https://files.acme.in/r/{call_id}/{file}"), clock=lambda: T0)
    r = await client.get(_path("1714.1", "call-1.wav"), allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"] == "https://files.acme.in/r/1714.1/call-1.wav"
    _, _, cid, exp, sig, name = _path("1714.1", "call-1.wav").split("/")
    r = await client.get(f"/rec/{cid}/{exp}/{sig}/x.wav", allow_redirects=False)
    assert r.status == 403 and "Location" not in r.headers
    plain = await make_client(clock=lambda: T0)
    assert (await plain.get(_path("1714.1", "call-1.wav"))).status == 404


async def test_a_link_names_the_pbx_of_its_call(make_client: MakeClient) -> None:
    """Two PBXs can give calls one id: the link of a named PBX's call signs its PBX too, and
    the redirect can send each PBX's recordings to that PBX's own server."""
    client = await make_client(recordings=RecordingAccess(
        SIGNER, None, "https://{pbx}.files.acme.in/r/{call_id}/{file}"), clock=lambda: T0)
    path = _path(call_ref("blr", "1714.1"), "call-1.wav")
    _, _, cid, exp, sig, name = path.split("/")
    assert cid == "blr%3A1714.1"
    r = await client.get(path, allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"] == "https://blr.files.acme.in/r/1714.1/call-1.wav"
    for other in ("del%3A1714.1", "1714.1"):  # the same id on another PBX: not this link's
        r = await client.get(f"/rec/{other}/{exp}/{sig}/{name}", allow_redirects=False)
        assert r.status == 403 and "Location" not in r.headers
    # a single PBX's links name the call alone, as before
    assert _path(call_ref("default", "1714.1"), "call-1.wav").split("/")[2] == "1714.1"


async def test_a_texted_link_opens_the_recording_through_the_running_agents_key(
        tmp_path: Path) -> None:
    """The whole path in one agent: the record path renders the text with a tracked link to a
    URL signed with the agent's own key, and its web follows that link to the file."""
    import re
    from datetime import UTC, datetime

    from aiohttp.test_utils import TestClient, TestServer

    from agent.app import AfterCallAgent
    from agent.models import CallRecord, Direction, Disposition
    from agent.settings import Settings
    from agent.web.app import make_app
    from agent.web.deps import WebDeps
    from devkit.harness import rules_with

    monitor = tmp_path / "monitor"
    monitor.mkdir()
    (monitor / "in-77.wav").write_bytes(b"RIFF-77")
    rules = rules_with(tmp_path, ("    dir: /var/spool/asterisk/monitor", f"    dir: {monitor}"),
                       first_rule="  - name: rec\n"
                                  "    send: {to: caller, template: call_recording}\n")
    agent = AfterCallAgent(Settings(ami_secret="x", rules=rules, db=tmp_path / "a.db"))
    await agent.open_store()
    client: TestClient | None = None
    try:
        now = datetime.now(UTC)
        await agent.pipeline.apply(CallRecord(
            call_id="77.1", caller="+919811000177", direction=Direction.INBOUND,
            disposition=Disposition.ANSWERED, ended_at=now,
            vars={"MIXMONITOR_FILENAME": f"{monitor}/in-77.wav"}))
        [row] = [r for r in await agent.store.list_messages() if r.rule == "rec"]
        code = re.search(r"https://acme\.in/l/([0-9A-Za-z]{10})", row.text or "")
        assert code is not None, row.text
        deps = WebDeps(store=agent.store, metrics=agent.metrics,
                       on_receipt=agent.dispatcher.on_receipt, on_inbound=agent._on_inbound,
                       recordings=agent.recordings)
        client = TestClient(TestServer(make_app(deps), host="127.0.0.1"))
        await client.start_server()
        r = await client.get(f"/l/{code.group(1)}", allow_redirects=False)
        assert r.status == 302
        location = r.headers["Location"]
        assert location.startswith("https://acme.in/rec/77.1/")
        r = await client.get(location.removeprefix("https://acme.in"))
        assert r.status == 200 and await r.read() == b"RIFF-77"
        assert (tmp_path / "a.db.recording-secret").exists()  # the agent's own key
        # A call of a named PBX: its link names the PBX, and opens the same way.
        (monitor / "in-78.wav").write_bytes(b"RIFF-78")
        await agent.pipeline.apply(CallRecord(
            call_id="77.1", pbx="blr", caller="+919811000178", direction=Direction.INBOUND,
            disposition=Disposition.ANSWERED, ended_at=now,
            vars={"MIXMONITOR_FILENAME": f"{monitor}/in-78.wav"}))
        [row] = [r for r in await agent.store.list_messages()
                 if r.rule == "rec" and r.pbx == "blr"]
        code = re.search(r"https://acme\.in/l/([0-9A-Za-z]{10})", row.text or "")
        assert code is not None, row.text
        r = await client.get(f"/l/{code.group(1)}", allow_redirects=False)
        location = r.headers["Location"]
        assert location.startswith("https://acme.in/rec/blr%3A77.1/"), location
        r = await client.get(location.removeprefix("https://acme.in"))
        assert r.status == 200 and await r.read() == b"RIFF-78"
    finally:
        if client is not None:
            await client.close()
        await agent.dispatcher.stop(timeout=1.0)
        await agent.store.close()
