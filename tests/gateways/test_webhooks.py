"""Webhook verification and parsing, fed with each gateway's documented payload shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from multidict import MultiDict
from pydantic import ValidationError

from agent.gateways.presets import generic, twilio
from agent.gateways.presets.common import HttpGatewayConfig, callback_token, mask_url
from agent.gateways.webhooks import (
    Kind,
    ReplayCache,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookRequest,
    handle,
    parse_receipt,
    verify,
)
from agent.models import ReceiptState
from agent.sms.encoding import encode_gsm7

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BASE = "https://agent.example.com"
SECRET = "whsec-test-123"
AUTH_TOKEN = "twilio-token-abc"
SID = "AC" + "1" * 32


def cfg(preset: str, **kw: Any) -> HttpGatewayConfig:
    base: dict[str, Any] = {"name": f"gw-{preset}", "preset": preset, "url": "http://127.0.0.1:1/x",
                            "callback_base": BASE}
    if preset in ("kannel", "jasmin"):
        base.update(username="u", password="p", webhook_secret=SECRET)
    elif preset == "twilio":
        base.update(url="https://api.twilio.com", account_sid=SID, auth_token=AUTH_TOKEN)
    else:
        base.update(request_template={"to": "{to}", "text": "{text}", "reference": "{message_id}"},
                    webhook_secret=SECRET)
    base.update(kw)
    return HttpGatewayConfig(**base)


def get_request(url: str, query: dict[str, str]) -> WebhookRequest:
    full = f"{url}&{urlencode(query)}" if "?" in url else f"{url}?{urlencode(query)}"
    from yarl import URL

    return WebhookRequest(method="GET", url=full, headers={}, query=dict(URL(full).query))


# -- Twilio: the algorithm, checked against the vectors in Twilio's own validator tests ----------

TW_URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
TW_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
             "To": "+18005551212", "Caller": "+14158675309"}


def test_twilio_signature_matches_twilio_documented_vector() -> None:
    assert twilio.signature(b"12345", TW_URI, TW_PARAMS.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilio_signature_sorts_repeated_parameters_by_value() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio.signature(b"12345", TW_URI, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def _tw_config(token: str = "12345") -> HttpGatewayConfig:
    return cfg("twilio", auth_token=token, account_sid="AC123")


@pytest.mark.parametrize(("url", "sig"), [
    (TW_URI, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    (TW_URI.replace(".com", ".com:1234"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # port removed
    (TW_URI, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443 added
    (TW_URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80 added
])
def test_twilio_verify_accepts_url_with_and_without_port(url: str, sig: str) -> None:
    req = WebhookRequest("POST", url, {"X-Twilio-Signature": sig}, {}, TW_PARAMS)
    verify(_tw_config(), Kind.RECEIPT, req, now=NOW)


def test_twilio_verify_json_body_by_body_sha256() -> None:
    body = b'{"property": "value", "boolean": true}'
    url = TW_URI + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    req = WebhookRequest("POST", url, {"x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4="},
                         {"bodySHA256": url.rsplit("=", 1)[1]}, None, body)
    verify(_tw_config(), Kind.RECEIPT, req, now=NOW)
    tampered = WebhookRequest(req.method, req.url, req.headers, req.query, None, body + b" ")
    with pytest.raises(WebhookAuthError, match="bodySHA256"):
        verify(_tw_config(), Kind.RECEIPT, tampered, now=NOW)


def _twilio_status_callback(status: str, **extra: str) -> tuple[HttpGatewayConfig, WebhookRequest]:
    """The form Twilio POSTs to a StatusCallback (fields as documented for Messaging)."""
    c = cfg("twilio")
    url = c.receipt_url("msg-42")
    assert url is not None
    form = {"ApiVersion": "2010-04-01", "AccountSid": SID, "From": "+15017122661",
            "To": "+919812345678", "MessageSid": "SM" + "a" * 32, "SmsSid": "SM" + "a" * 32,
            "MessageStatus": status, "SmsStatus": status, **extra}
    sig = twilio.signature(AUTH_TOKEN.encode(), url, form.items())
    from yarl import URL

    return c, WebhookRequest("POST", url, {"X-Twilio-Signature": sig}, dict(URL(url).query), form)


@pytest.mark.parametrize(("status", "state"), [
    ("delivered", ReceiptState.DELIVERED), ("sent", ReceiptState.ACCEPTED),
    ("undelivered", ReceiptState.UNDELIVERED), ("failed", ReceiptState.REJECTED),
    ("queued", ReceiptState.ACCEPTED), ("brand-new-status", ReceiptState.UNKNOWN),
])
def test_twilio_status_callback_maps_states(status: str, state: ReceiptState) -> None:
    c, req = _twilio_status_callback(status, ErrorCode="30003", RawDlrDoneDate="2405011201")
    out = handle(c, Kind.RECEIPT, req, now=NOW, replay=ReplayCache())
    assert out.receipt is not None
    assert out.receipt.state is state
    assert out.receipt.message_id == "msg-42"
    assert out.receipt.smsc_id == "SM" + "a" * 32
    assert out.receipt.error_code == "30003"
    assert out.receipt.done_at == datetime(2024, 5, 1, 12, 1, tzinfo=UTC)


def test_twilio_bad_or_missing_signature_is_refused() -> None:
    c, req = _twilio_status_callback("delivered")
    forged = WebhookRequest("POST", req.url, req.headers, req.query,
                            {**(req.form or {}), "MessageStatus": "failed"})
    with pytest.raises(WebhookAuthError, match="bad X-Twilio-Signature"):
        verify(c, Kind.RECEIPT, forged, now=NOW)
    unsigned = WebhookRequest("POST", req.url, {}, req.query, req.form)
    with pytest.raises(WebhookAuthError, match="missing X-Twilio-Signature"):
        verify(c, Kind.RECEIPT, unsigned, now=NOW)
    other_token = cfg("twilio", auth_token="someone-elses")
    with pytest.raises(WebhookAuthError):
        verify(other_token, Kind.RECEIPT, req, now=NOW)


def test_twilio_replay_by_idempotency_token() -> None:
    c, req = _twilio_status_callback("delivered")
    req = WebhookRequest(req.method, req.url, {**req.headers, "I-Twilio-Idempotency-Token": "tok-1"},
                         req.query, req.form)
    cache = ReplayCache()
    handle(c, Kind.RECEIPT, req, now=NOW, replay=cache)
    with pytest.raises(WebhookReplayError):
        handle(c, Kind.RECEIPT, req, now=NOW, replay=cache)


def test_twilio_inbound_answers_empty_twiml() -> None:
    c = cfg("twilio")
    url = f"{BASE}/webhooks/{c.name}/inbound"
    form = MultiDict([("MessageSid", "SM1"), ("AccountSid", SID), ("From", "+919812345678"),
                      ("To", "+15017122661"), ("Body", "STOP"), ("NumMedia", "0")])
    sig = twilio.signature(AUTH_TOKEN.encode(), url, form.items())
    out = handle(c, Kind.INBOUND, WebhookRequest("POST", url, {"X-Twilio-Signature": sig}, {}, form),
                 now=NOW, replay=None)
    assert out.inbound is not None
    assert (out.inbound.sender, out.inbound.text) == ("+919812345678", "STOP")
    assert out.ack.content_type == "text/xml" and "<Response>" in out.ack.body


def test_twilio_other_account_is_refused() -> None:
    _c, req = _twilio_status_callback("delivered")
    c2 = cfg("twilio", account_sid="AC" + "9" * 32)  # same token, other account
    with pytest.raises(WebhookAuthError, match="AccountSid"):
        parse_receipt(c2, req)


# -- Kannel: the dlr-url query we gave it, filled with its escape codes --------------------------


def _kannel_dlr(mid: str = "msg-7", **q: str) -> tuple[HttpGatewayConfig, WebhookRequest]:
    c = cfg("kannel")
    url = c.receipt_url(mid)
    assert url is not None
    return c, get_request(url, q)


@pytest.mark.parametrize(("dlr_type", "answer", "state"), [
    ("1", "id:0A1B sub:001 dlvrd:001 submit date:2405011200 done date:2405011201 stat:DELIVRD err:000 text:Hi",
     ReceiptState.DELIVERED),
    ("2", "id:0A1B sub:001 dlvrd:000 submit date:2405011200 done date:2405011201 stat:EXPIRED err:002 text:Hi",
     ReceiptState.EXPIRED),
    ("2", "id:0A1B sub:001 dlvrd:000 submit date:2405011200 done date:2405011201 stat:UNDELIV err:001 text:Hi",
     ReceiptState.UNDELIVERED),
    ("16", "", ReceiptState.REJECTED),
    ("8", "ACK/", ReceiptState.ACCEPTED),
    ("4", "", ReceiptState.ACCEPTED),
])
def test_kannel_dlr_states(dlr_type: str, answer: str, state: ReceiptState) -> None:
    c, req = _kannel_dlr(type=dlr_type, answer=answer, ts="1714564860", fid="%F")
    out = handle(c, Kind.RECEIPT, req, now=NOW, replay=ReplayCache())
    r = out.receipt
    assert r is not None and r.state is state and r.message_id == "msg-7"
    assert r.done_at == datetime.fromtimestamp(1714564860, UTC)
    if answer.startswith("id:"):
        assert r.smsc_id == "0A1B"  # %F not substituted (old Kannel): fall back to the answer's id
    assert "t" not in json.loads(r.raw)  # the token is not stored


def test_kannel_token_is_bound_to_the_message() -> None:
    c, req = _kannel_dlr(type="1")
    other = cfg("kannel").receipt_url("msg-8")
    assert other is not None
    from yarl import URL

    token_of_other = URL(other).query["t"]
    forged = WebhookRequest("GET", req.url, {}, {**req.query, "t": token_of_other})
    with pytest.raises(WebhookAuthError, match="bad token"):
        verify(c, Kind.RECEIPT, forged, now=NOW)
    no_token = WebhookRequest("GET", req.url, {}, {k: v for k, v in req.query.items() if k != "t"})
    with pytest.raises(WebhookAuthError, match="missing token"):
        verify(c, Kind.RECEIPT, no_token, now=NOW)
    inbound_token = callback_token(SECRET.encode(), "inbound", c.name, "")
    with pytest.raises(WebhookAuthError):
        verify(c, Kind.RECEIPT, WebhookRequest("GET", req.url, {}, {**req.query, "t": inbound_token}),
               now=NOW)


def test_kannel_malformed_dlr_names_the_field() -> None:
    c, req = _kannel_dlr(type="delivered")
    with pytest.raises(WebhookPayloadError, match="'type'"):
        handle(c, Kind.RECEIPT, req, now=NOW, replay=None)
    c, req = _kannel_dlr()
    with pytest.raises(WebhookPayloadError, match="missing field 'type'"):
        handle(c, Kind.RECEIPT, req, now=NOW, replay=None)


def test_kannel_identical_request_is_a_replay_and_payload_errors_do_not_poison_the_cache() -> None:
    cache = ReplayCache()
    c, req = _kannel_dlr(type="1", answer="stat:DELIVRD")
    handle(c, Kind.RECEIPT, req, now=NOW, replay=cache)
    with pytest.raises(WebhookReplayError):
        handle(c, Kind.RECEIPT, req, now=NOW, replay=cache)
    _, bad = _kannel_dlr(type="x")
    for _ in range(2):  # the same malformed request twice: a payload error both times
        with pytest.raises(WebhookPayloadError):
            handle(c, Kind.RECEIPT, bad, now=NOW, replay=cache)


def test_kannel_inbound_with_gateway_token() -> None:
    c = cfg("kannel")
    url = c.inbound_url()
    assert url is not None
    req = get_request(url, {"from": "+919812345678", "to": "ACMECO", "text": "C", "ts": "1714564860"})
    out = handle(c, Kind.INBOUND, req, now=NOW, replay=None)
    assert out.inbound is not None and out.inbound.text == "C" and out.inbound.received_at == NOW


# -- Jasmin: DLR POST fields (levels 1 and 2) and MO, acknowledged with ACK/Jasmin ---------------


def _jasmin(kind: Kind, form: dict[str, str], mid: str = "msg-9") -> tuple[HttpGatewayConfig, WebhookRequest]:
    c = cfg("jasmin")
    url = c.receipt_url(mid) if kind is Kind.RECEIPT else c.inbound_url()
    assert url is not None
    from yarl import URL

    return c, WebhookRequest("POST", url, {"Content-Type": "application/x-www-form-urlencoded"},
                             dict(URL(url).query), form)


def test_jasmin_level1_and_level2_dlrs() -> None:
    c, req = _jasmin(Kind.RECEIPT, {"id": "16fd2706-8baf-433b-82eb-8c7fada847da",
                                    "message_status": "ESME_ROK", "level": "3"})
    out = handle(c, Kind.RECEIPT, req, now=NOW, replay=None)
    assert out.receipt is not None and out.receipt.state is ReceiptState.ACCEPTED
    assert out.ack.body == "ACK/Jasmin"
    c, req = _jasmin(Kind.RECEIPT, {
        "id": "16fd2706-8baf-433b-82eb-8c7fada847da", "id_smsc": "2567", "message_status": "UNDELIV",
        "level": "3", "subdate": "1311022338", "donedate": "1311022339", "sub": "1", "dlvrd": "0",
        "err": "1", "text": "Hello foo bar", "connector": "smsc"})
    r = handle(c, Kind.RECEIPT, req, now=NOW, replay=None).receipt
    assert r is not None
    assert (r.state, r.smsc_id, r.message_id, r.error_code) == (
        ReceiptState.UNDELIVERED, "16fd2706-8baf-433b-82eb-8c7fada847da", "msg-9", "1")
    assert r.done_at == datetime(2013, 11, 2, 23, 39, tzinfo=UTC)
    c, req = _jasmin(Kind.RECEIPT, {"id": "x", "message_status": "ESME_RINVNUMDESTS", "level": "1"})
    r = handle(c, Kind.RECEIPT, req, now=NOW, replay=None).receipt
    assert r is not None and r.state is ReceiptState.REJECTED


def test_jasmin_mo_ucs2_from_binary() -> None:
    text = "रद्द करें"
    c, req = _jasmin(Kind.INBOUND, {"id": "a", "from": "+919812345678", "to": "ACMECO",
                                    "origin-connector": "smsc", "coding": "8", "content": "?",
                                    "binary": text.encode("utf-16-be").hex()})
    out = handle(c, Kind.INBOUND, req, now=NOW, replay=None)
    assert out.inbound is not None and out.inbound.text == text
    assert out.ack.body == "ACK/Jasmin"


@pytest.mark.parametrize("coding", ["8", "\x08"])
def test_jasmin_mo_ucs2_with_coding_as_number_or_raw_octet(coding: str) -> None:
    # Jasmin 0.11's deliver_sm thrower posts coding as the PDU's raw octet (%08), and content
    # as the raw UTF-16 octets: only binary, decoded by the data coding, gives the text.
    text = "रोकें STOP 🙏"
    raw = text.encode("utf-16-be")
    c, req = _jasmin(Kind.INBOUND, {"id": "a", "from": "919812345678", "to": "ACMECO",
                                    "origin-connector": "smsc", "coding": coding,
                                    "content": raw.decode("latin-1"), "binary": raw.hex()})
    out = handle(c, Kind.INBOUND, req, now=NOW, replay=None)
    assert out.inbound is not None and out.inbound.text == text


def test_jasmin_mo_gsm7_septets_from_binary() -> None:
    # GSM 03.38 octets are not ASCII beyond the letters: '@' is 0x00, '£' 0x01, '{' ESC 0x28.
    text = "Stop @ £5 {ok}"
    raw = encode_gsm7(text)
    c, req = _jasmin(Kind.INBOUND, {"id": "a", "from": "919812345678", "to": "ACMECO",
                                    "coding": "\x00", "content": raw.decode("latin-1"),
                                    "binary": raw.hex()})
    out = handle(c, Kind.INBOUND, req, now=NOW, replay=None)
    assert out.inbound is not None and out.inbound.text == text


def test_jasmin_mo_bad_coding_is_named() -> None:
    c, req = _jasmin(Kind.INBOUND, {"id": "a", "from": "1", "to": "2", "coding": "utf8",
                                    "binary": "41"})
    with pytest.raises(WebhookPayloadError, match="'coding'"):
        handle(c, Kind.INBOUND, req, now=NOW, replay=None)


def test_jasmin_missing_field_is_named() -> None:
    c, req = _jasmin(Kind.RECEIPT, {"id": "x", "level": "1"})
    with pytest.raises(WebhookPayloadError, match="'message_status'"):
        handle(c, Kind.RECEIPT, req, now=NOW, replay=None)


# -- generic: HMAC-SHA256 with a timestamp ----------------------------------------------------


def _generic(doc: dict[str, Any], *, ts: int | None = None, secret: str = SECRET,
             kind: Kind = Kind.RECEIPT) -> tuple[HttpGatewayConfig, WebhookRequest]:
    c = cfg("generic")
    body = json.dumps(doc).encode()
    t = int(NOW.timestamp()) if ts is None else ts
    url = f"{BASE}/webhooks/{c.name}/{kind.value}"
    return c, WebhookRequest("POST", url, {"X-Signature": generic.sign(secret.encode(), t, body),
                                           "Content-Type": "application/json"}, {}, None, body)


def test_generic_receipt_signed_and_mapped() -> None:
    c, req = _generic({"id": "G1", "reference": "msg-1", "status": "DELIVERED", "error": "000"})
    r = handle(c, Kind.RECEIPT, req, now=NOW, replay=ReplayCache()).receipt
    assert r is not None
    assert (r.state, r.smsc_id, r.message_id) == (ReceiptState.DELIVERED, "G1", "msg-1")


def test_generic_bad_signature_stale_and_replayed() -> None:
    c, req = _generic({"id": "G1", "status": "delivered"}, secret="wrong")
    with pytest.raises(WebhookAuthError, match="bad signature"):
        verify(c, Kind.RECEIPT, req, now=NOW)
    c, req = _generic({"id": "G1", "status": "delivered"}, ts=int(NOW.timestamp()) - 3600)
    with pytest.raises(WebhookAuthError, match="stale"):
        verify(c, Kind.RECEIPT, req, now=NOW)
    c, req = _generic({"id": "G1", "status": "delivered"})
    cache = ReplayCache()
    verify(c, Kind.RECEIPT, req, now=NOW, replay=cache)
    with pytest.raises(WebhookReplayError):
        verify(c, Kind.RECEIPT, req, now=NOW, replay=cache)
    tampered = WebhookRequest(req.method, req.url, req.headers, req.query, None,
                              req.body.replace(b"delivered", b"rejected"))
    with pytest.raises(WebhookAuthError, match="bad signature"):
        verify(c, Kind.RECEIPT, tampered, now=NOW)


def test_generic_inbound_and_non_json_body() -> None:
    c, req = _generic({"from": "+919812345678", "to": "ACMECO", "text": "hi"}, kind=Kind.INBOUND)
    out = handle(c, Kind.INBOUND, req, now=NOW, replay=None)
    assert out.inbound is not None and out.inbound.sender == "+919812345678"
    body = b"not json"
    t = int(NOW.timestamp())
    bad = WebhookRequest("POST", req.url, {"X-Signature": generic.sign(SECRET.encode(), t, body)},
                         {}, None, body)
    with pytest.raises(WebhookPayloadError, match="not JSON"):
        handle(c, Kind.RECEIPT, bad, now=NOW, replay=None)


# -- replay cache and configuration -----------------------------------------------------------


def test_replay_cache_is_bounded_and_expires() -> None:
    cache = ReplayCache(max_entries=3, ttl=10)
    assert not any(cache.seen(k, 0) for k in "abcd")
    assert len(cache) == 3
    assert not cache.seen("a", 1)  # evicted as the oldest, so new again
    assert cache.seen("d", 1)
    assert not cache.seen("d", 11)  # expired
    cache.discard("d")
    assert not cache.seen("d", 12)


@pytest.mark.parametrize(("kw", "message"), [
    ({"preset": "kannel", "username": None}, "needs username"),
    ({"preset": "twilio", "auth_token": None, "username": None, "password": None},
     "needs account_sid, auth_token"),
    ({"preset": "kannel", "url": "http://h/cgi-bin/sendsms?password=x"}, "credentials"),
    ({"preset": "generic", "request_template": {"to": "{phone}"}}, "unknown placeholder"),
    ({"preset": "kannel", "request_template": {"to": "{to}"}}, "kannel does not use request_template"),
    ({"preset": "jasmin", "webhook_secret": None}, "needs webhook_secret"),
    ({"preset": "kannel", "surprise": 1}, "surprise"),
])
def test_config_errors_name_the_field(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"name": "g", "url": "http://127.0.0.1:1/x", "username": "u",
                            "password": "p", "account_sid": None, "auth_token": None,
                            "callback_base": BASE, "webhook_secret": SECRET}
    base.update(kw)
    with pytest.raises(ValidationError, match=message):
        HttpGatewayConfig(**base)


def test_secrets_are_not_in_config_repr_or_masked_urls() -> None:
    c = cfg("kannel", password="hunter2")
    assert "hunter2" not in repr(c) and "hunter2" not in str(c.model_dump())
    masked = mask_url("http://u:pw@h/cgi-bin/sendsms?username=u&password=hunter2&t=abc&to=1")
    assert "hunter2" not in masked and "pw" not in masked and "abc" not in masked
    assert "to=1" in masked
