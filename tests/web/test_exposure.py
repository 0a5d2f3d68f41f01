"""HTTP exposure: real requests against the real aiohttp app on loopback (issue #19, findings
6, 7, 8 and 10): Host check, token behind a proxy or with public_url, 429s, expiring
session cookies, bad numbers in parameters, and the header read deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from web_helpers import MakeClient, seed

from agent.store.sqlite import SqliteStore
from agent.web import guard
from agent.web.app import WebDeps, make_app
from agent.metrics import Metrics

TOKEN = "s3cret-token"
DATA = ("/", "/api/messages?unmasked=1", "/api/report", "/metrics")


async def test_dns_rebinding_host_is_refused(store: SqliteStore, make_client: MakeClient) -> None:
    await seed(store)
    client = await make_client()  # loopback, no token: the local-only setup
    for path in DATA:
        r = await client.get(path, headers={"Host": "rebind.attacker.example:8080"})
        assert r.status == 421, path
    ok = await client.get("/api/messages?unmasked=1", headers={"Host": "localhost:8080"})
    assert ok.status == 200
    assert any(m["number"] == "+919812345610" for m in (await ok.json())["messages"])
    # public routes answer whatever the Host (a proxy may rewrite it)
    assert (await client.get("/healthz", headers={"Host": "x.example"})).status == 200


@pytest.mark.parametrize("header", [
    {"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
    {"X-Real-IP": "203.0.113.9"}, {"X-Forwarded-Proto": "https"},
])
async def test_forwarded_request_needs_the_token(
    store: SqliteStore, make_client: MakeClient, header: dict[str, str]
) -> None:
    await seed(store)
    open_client = await make_client()  # loopback bind, no token configured
    for path in DATA:
        assert (await open_client.get(path, headers=header)).status == 403, path
    assert (await open_client.get("/healthz", headers=header)).status == 200
    assert (await open_client.get("/l/NoSuchCode", headers=header)).status == 404
    with_token = await make_client(dashboard_token=TOKEN)
    for path in DATA:
        r = await with_token.get(path, headers=header, allow_redirects=False)
        assert r.status == 401, path
    r = await with_token.get("/api/report", headers={**header, "Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200


async def test_public_url_makes_the_token_required(make_client: MakeClient) -> None:
    client = await make_client(public_url="https://agent.example.com", dashboard_token=TOKEN)
    assert (await client.get("/api/report")).status == 401
    r = await client.get("/api/report", headers={"Host": "agent.example.com",
                                                  "Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200
    locked = await make_client(public_url="https://agent.example.com")
    assert (await locked.get("/api/messages?unmasked=1")).status == 403


async def test_session_cookie_expires_and_dies_with_the_token(make_client: MakeClient) -> None:
    client = await make_client(bound_to_loopback=False, dashboard_token=TOKEN)
    r = await client.get(f"/?token={TOKEN}", allow_redirects=False)
    cookie = r.cookies["aftercall_session"]
    assert TOKEN not in cookie.value and int(cookie["max-age"]) == int(guard.SESSION_TTL)
    jar = {"aftercall_session": cookie.value}
    assert (await client.get("/api/report", cookies=jar)).status == 200
    now = time.time()
    assert not guard.session_valid(cookie.value, TOKEN, now + guard.SESSION_TTL + 1)
    assert not guard.session_valid(cookie.value, "rotated-token", now)
    stale = guard.session_value(TOKEN, now - guard.SESSION_TTL - 5)
    assert (await client.get("/api/report", cookies={"aftercall_session": stale})).status == 401
    forged = f"{int(now) + 10**6}.{cookie.value.split('.', 1)[1]}"  # a later expiry, same MAC
    assert (await client.get("/api/report", cookies={"aftercall_session": forged})).status == 401
    rotated = await make_client(bound_to_loopback=False, dashboard_token="rotated-token")
    assert (await rotated.get("/api/report", cookies=jar)).status == 401


async def test_each_route_is_rate_limited_with_429(store: SqliteStore,
                                                   make_client: MakeClient) -> None:
    await seed(store)
    client = await make_client()
    limit = guard.ROUTE_LIMITS["report"]
    statuses = [(await client.get("/api/report")).status for _ in range(limit.burst + 3)]
    assert statuses[: limit.burst] == [200] * limit.burst
    assert statuses[-1] == 429
    r = await client.get("/api/report")
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert (await client.get("/healthz")).status == 200  # another route's budget is its own
    links = [(await client.get("/l/NoSuchCode")).status
             for _ in range(guard.ROUTE_LIMITS["links"].burst + 5)]
    assert 429 in links


@pytest.mark.parametrize("limit", ["5" * 5000, "\u00b2", "99999999999"])
async def test_absurd_numbers_in_parameters_are_400(make_client: MakeClient, limit: str) -> None:
    client = await make_client()
    r = await client.get("/api/messages", params={"limit": limit})
    assert r.status == 400 and "limit" in await r.text()


async def test_slow_headers_are_cut_off(store: SqliteStore) -> None:
    from aiohttp import web

    deps = WebDeps(store=store, metrics=Metrics(), on_receipt=_noop, on_inbound=_noop)
    runner = guard.GuardedRunner(make_app(deps), header_timeout=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        for _, w in conns:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finished
            await w.drain()
        # Each connection is closed by the server: reading returns EOF within the bound.
        eofs = await asyncio.wait_for(
            asyncio.gather(*(r.read() for r, _ in conns)), timeout=5.0)
        assert all(chunk == b"" for chunk in eofs)
        # A well-behaved client is still served.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(r.read(), 5.0)).startswith(b"HTTP/1.1 200")
        for _, w in conns:
            w.close()
    finally:
        await runner.cleanup()


async def _noop(_: Any) -> None:
    return None


async def test_a_token_holder_may_use_any_host_name(make_client: MakeClient) -> None:
    client = await make_client(bound_to_loopback=False, dashboard_token=TOKEN)
    r = await client.get("/api/report", headers={"Host": "pbx01.corp:8080",
                                                  "Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200
    assert (await client.get("/api/report", headers={"Host": "pbx01.corp:8080"})).status == 421
