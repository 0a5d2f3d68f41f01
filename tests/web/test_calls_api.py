"""The calls view's API and list management over HTTP: explain from stored data, masking,
reasons, and changes that need the token and a CSRF token and say who made them."""

from __future__ import annotations

from typing import Any

import pytest

from calls_data import OPTED_OUT, SALES_CALLER, SHOWCASE, generate
from web_helpers import MakeClient

from agent.store.sqlite import SqliteStore
from agent.web.manage import csrf_token

# The calls view's data is bulk-written straight into the SQLite file (calls_data.py).
pytestmark = pytest.mark.sqlite_only

TOKEN = "dash-token-123"


async def _seeded(store: SqliteStore) -> None:
    await generate(store, 60)


async def test_a_suppressed_call_explains_itself(store: SqliteStore,
                                                 make_client: MakeClient) -> None:
    await _seeded(store)
    client = await make_client(timezone="Asia/Kolkata", region="IN")
    body = await (await client.get(f"/api/calls/{SHOWCASE.suppressed}")).json()
    assert body["call"]["caller"] == "+91******0555"  # masked by default
    rules = {r["rule"]: r for r in body["rules"]}
    assert rules["support-followup"]["matched"] is False
    assert rules["support-followup"]["reason"] == (
        "queue is 'Billing', rule wants one of ['Support']")
    sorry = rules["missed-call-sorry"]
    assert sorry["matched"] and len(sorry["messages"]) == 1
    (msg,) = body["messages"]
    assert (msg["status"], msg["reason"]) == ("suppressed", "opt_out")
    assert msg["detail"] == "number opted out (reply:smsc:STOP)"
    assert [h["state"] for h in msg["history"]] == ["suppressed"]


async def test_delivered_messages_have_no_reason_and_texts_are_masked(
    store: SqliteStore, make_client: MakeClient
) -> None:
    await _seeded(store)
    client = await make_client()
    body = await (await client.get(f"/api/calls/{SHOWCASE.agent_summary}")).json()
    (msg,) = body["messages"]
    assert msg["status"] == "delivered" and msg["reason"] is None and msg["error_code"] is None
    assert SALES_CALLER not in msg["text"] and "+91******0777" in msg["text"]
    assert [h["state"] for h in msg["history"]] == ["queued", "queued", "submitted", "delivered"]
    assert msg["receipts"][0]["state"] == "delivered"
    # The SMS log masks texts too, and has no reason for a delivered message.
    log = await (await client.get(f"/api/messages?call={SHOWCASE.agent_summary}")).json()
    (row,) = log["messages"]
    assert SALES_CALLER not in row["text"] and row["reason"] is None
    # Clear numbers only when asked for (and allowed: here a loopback agent without a token).
    clear = await (await client.get(f"/api/calls/{SHOWCASE.agent_summary}?unmasked")).json()
    assert SALES_CALLER in clear["messages"][0]["text"]


async def test_clear_numbers_need_the_token_when_one_is_set(
    store: SqliteStore, make_client: MakeClient
) -> None:
    await _seeded(store)
    client = await make_client(dashboard_token=TOKEN)
    url = f"/api/calls/{SHOWCASE.agent_summary}?unmasked"
    no_token = await (await client.get(url)).json()
    assert SALES_CALLER not in no_token["messages"][0]["text"]
    with_token = await (await client.get(
        url, headers={"Authorization": f"Bearer {TOKEN}"})).json()
    assert SALES_CALLER in with_token["messages"][0]["text"]


async def test_search_by_number_finds_the_call_and_its_sms(
    store: SqliteStore, make_client: MakeClient
) -> None:
    await _seeded(store)
    client = await make_client(region="IN")
    for typed in (OPTED_OUT, "098110 00555", "0555"):
        body = await (await client.get("/api/calls", params={"number": typed})).json()
        assert [c["call_id"] for c in body["calls"]] == [SHOWCASE.suppressed], typed
        assert body["calls"][0]["messages"] == [
            {"rule": "missed-call-sorry", "status": "suppressed", "reason": "opt_out"}]
    bad = await client.get("/api/calls", params={"number": "12"})
    assert bad.status == 400 and "number" in (await bad.json())["error"]
    listed = await (await client.get("/api/calls", params={"disposition": "missed",
                                                           "limit": "500"})).json()
    assert listed["count"] > 0
    assert {c["disposition"] for c in listed["calls"]} == {"missed"}


async def _post(client: Any, path: str, body: Any, **headers: str) -> Any:
    return await client.post(path, json=body, headers=headers)


async def test_managing_lists_needs_a_configured_token(
    store: SqliteStore, make_client: MakeClient
) -> None:
    client = await make_client()  # loopback, no token: nobody to name in the history
    r = await _post(client, "/api/lists/optout", {"number": "+919812345678", "action": "add"})
    assert r.status == 403 and "dashboard token" in (await r.json())["error"]
    session = await (await client.get("/api/session")).json()
    assert session["manage"] is False and session["csrf"] is None
    assert not await store.is_opted_out("+919812345678")


async def test_list_changes_need_the_token_and_csrf_and_record_who(
    store: SqliteStore, make_client: MakeClient
) -> None:
    client = await make_client(dashboard_token=TOKEN, region="IN")
    number = {"number": "098123 45678", "action": "add"}
    assert (await _post(client, "/api/lists/dnd", number)).status == 401
    # Signed in by cookie (as the browser is), a request without the CSRF token is refused.
    await client.get(f"/?token={TOKEN}", allow_redirects=False)
    r = await _post(client, "/api/lists/dnd", number)
    assert r.status == 403 and "CSRF" in (await r.json())["error"]
    r = await _post(client, "/api/lists/dnd", number, **{"X-CSRF-Token": "0" * 64})
    assert r.status == 403
    session = await (await client.get("/api/session")).json()
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["aftercall_session"]
    assert session["manage"] is True and session["csrf"] == csrf_token(TOKEN, cookie.value)
    r = await _post(client, "/api/lists/dnd", number,
                    **{"X-CSRF-Token": session["csrf"], "X-Operator": "Asha <script>"})
    assert r.status == 200 and (await r.json())["who"] == "dashboard:Asha script"
    assert await store.is_dnd("+919812345678")
    # Another site's page cannot make the browser do it either.
    r = await _post(client, "/api/lists/dnd", {"number": "+919812345678", "action": "remove"},
                    **{"X-CSRF-Token": session["csrf"], "Origin": "https://evil.example"})
    assert r.status == 403 and await store.is_dnd("+919812345678")
    # An API client with the token in a header needs no CSRF token (no cookie rides along).
    r = await _post(client, "/api/lists/dnd", {"number": "+919812345678", "action": "remove"},
                    Authorization=f"Bearer {TOKEN}")
    assert r.status == 200 and not await store.is_dnd("+919812345678")
    history = await store.list_history("+919812345678")
    assert [(e.action, e.who) for e in history] == [("remove", "dashboard"),
                                                    ("add", "dashboard:Asha script")]
    listed = await (await client.get("/api/lists")).json()
    assert [h["action"] for h in listed["history"]] == ["remove", "add"]


async def test_dnd_csv_import_and_ambiguous_verdicts(
    store: SqliteStore, make_client: MakeClient
) -> None:
    await _seeded(store)
    client = await make_client(dashboard_token=TOKEN, region="IN")
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "ravi"}
    r = await client.post("/api/lists/dnd/import", data="number\n+919800000001\n09800000002\nxyz\n",
                          headers={**auth, "Content-Type": "text/csv"})
    body = await r.json()
    assert r.status == 200 and body["imported"] == 2 and body["skipped"] == 1
    assert body["problems"] == ["upload.csv:4: not a phone number"]
    assert await store.is_dnd("+919800000002")
    listed = await (await client.get("/api/lists", headers=auth)).json()
    (amb,) = listed["ambiguous"]
    r = await client.post(f"/api/ambiguous/{amb['id']}", json={"action": "resend"}, headers=auth)
    assert r.status == 200 and (await r.json())["status"] == "queued"
    events = await store.message_events(amb["id"])
    assert events[-1].detail == "resent by dashboard:ravi: the SMSC did not have it"
    again = await client.post(f"/api/ambiguous/{amb['id']}", json={"action": "drop"},
                              headers=auth)
    assert again.status == 404  # no longer ambiguous
