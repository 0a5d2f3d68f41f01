"""GET /rec/...: a call's recording, for a link whose signature and expiry hold (agent.sms.recording).

Public like /l/ (a handset follows the short link here), so the signature is the only key:
a made-up or altered link is 403, an expired one 410, and neither says whether the call or
the file exists. The file is served from the configured directory (its name only: no path
leaves it) or the request is redirected to the configured URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from agent.settings import Settings, read_secret_file
from agent.sms.recording import RecordingSigner, Verdict, split_ref
from agent.store import is_postgres_url
from agent.web.deps import DEPS

log = structlog.get_logger("aftercall.web")

_HEADERS = {"Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class RecordingAccess:
    """What the endpoint needs from rules.yaml's ``defaults.recordings``."""

    signer: RecordingSigner
    directory: Path | None
    url: str | None  # a pattern with {file} (and {call_id})


def recording_access(defaults: Any, settings: Settings) -> RecordingAccess | None:
    """From rules.yaml's defaults; None when recordings are not configured. Without a key
    there, the agent's own (``recording_secret``) signs: the engine's texts and this check
    then share it, as they share the rules object. Blocking (a small file): at start and
    reload, not per request."""
    rec = defaults.recordings
    if rec is None or not defaults.public_base_url:
        return None
    if rec.needs_agent_key:
        key = recording_secret(settings)
        rec.use_agent_key(key.encode() if key else None)
        if not key:
            log.error("recording_links_off", reason="no key shared by the agents on this "
                      "PostgreSQL database", fix="defaults.recordings.secret (or secret_file) "
                      "in rules.yaml, or AFTERCALL_WEBHOOK_SECRET")
            return None
    return RecordingAccess(rec.signer(defaults.public_base_url),
                           Path(rec.dir) if rec.dir else None, rec.url)


def recording_secret(settings: Settings) -> str | None:
    """The agent's own recording-link key, kept next to the database (made at the first
    start, mode 600) so links sent before a restart still open after it. On PostgreSQL the
    agents must sign alike (a link sent by one is opened at another): a key derived from
    their shared webhook secret, else None (no key to give)."""
    if is_postgres_url(settings.db):
        if not settings.webhook_secret:
            return None
        return hmac.new(settings.webhook_secret.encode(), b"aftercall recording links",
                        hashlib.sha256).hexdigest()
    path = Path(f"{settings.db}.recording-secret")
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return read_secret_file(path, "recording secret file", strict=True)


async def recording(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    access: RecordingAccess | None = deps.recordings
    m = request.match_info
    call_id, name = m["call_id"], m["file"]
    if access is None:
        return web.Response(status=404, text="not found\n", headers=_HEADERS)
    verdict = access.signer.check(call_id, m["expires"], m["sig"], name, deps.clock())
    if verdict is Verdict.BAD:
        # The signature is a bearer secret: never logged, nor the link.
        log.warning("recording_refused", reason="bad_signature")
        return web.Response(status=403, text="forbidden\n", headers=_HEADERS)
    if verdict is Verdict.EXPIRED:
        log.info("recording_refused", reason="expired", call_id=call_id)
        return web.Response(status=410, text="this link has expired\n", headers=_HEADERS)
    if access.url is not None:
        pbx, bare = split_ref(call_id)
        target = access.url.replace("{file}", quote(name)).replace(
            "{call_id}", quote(bare, safe="")).replace("{pbx}", quote(pbx, safe=""))
        log.info("recording_redirected", call_id=call_id)
        return web.Response(status=302, headers={**_HEADERS, "Location": target})
    assert access.directory is not None
    path = await asyncio.to_thread(_inside, access.directory, name)
    if path is None:
        log.warning("recording_missing", call_id=call_id, file=name)
        return web.Response(status=404, text="not found\n", headers=_HEADERS)
    log.info("recording_served", call_id=call_id)
    return web.FileResponse(path, headers={
        **_HEADERS, "Content-Disposition": f'inline; filename="{name}"'})


def _inside(directory: Path, name: str) -> Path | None:
    """The file ``name`` in ``directory``, not a link out of it; None when absent."""
    base = directory.resolve()
    path = (base / name).resolve()
    return path if path.parent == base and path.is_file() else None
