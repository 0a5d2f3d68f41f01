"""The Jasmin preset's reading of /send answers, on the bodies real Jasmin 0.11 gives
(jasmin/protocols/http/errors.py: one HTTP status for several kinds of refusal)."""

from __future__ import annotations

import pytest

from agent.errors import GatewayError, GatewayPermanentError, GatewayTemporaryError
from agent.gateways.presets import jasmin
from agent.gateways.presets.common import HttpGatewayConfig

CFG = HttpGatewayConfig(type="http", preset="jasmin", url="http://127.0.0.1:1401/send",
                        username="aftercall", password="pw", webhook_secret="s",
                        name="jasmin")


def refusal(status: int, body: str) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        jasmin.parse_submit(CFG, status, {}, body.encode())
    return err.value


def test_success_gives_jasmins_message_id() -> None:
    body = b'Success "2cf224b4-6ffb-4e75-b294-9203f3e9c755"'
    assert jasmin.parse_submit(CFG, 200, {}, body) == "2cf224b4-6ffb-4e75-b294-9203f3e9c755"


@pytest.mark.parametrize(("status", "body", "kind", "reason"), [
    # A bad login stops every message (the gateway turns unhealthy on auth_failed).
    (403, 'Error "Authentication failure for username:aftercall"', GatewayPermanentError,
     "auth_failed"),
    # A user over its http_throughput quota: later it passes. It used to fail the message.
    (403, 'Error "User throughput exceeded"', GatewayTemporaryError, "throttled"),
    (403, 'Error "Cannot charge submit_sm, check RouterPB log file for details"',
     GatewayPermanentError, "no_credit"),
    (412, 'Error "No route found"', GatewayPermanentError, "no_route"),
    # A failover route whose connectors are all down now: a later try may find one bound.
    (412, 'Error "Failover route has no bound connectors"', GatewayTemporaryError,
     "connector_down"),
    (400, 'Error "Authorization failed for user [u1] (Setting hex content not authorized)."',
     GatewayPermanentError, "rejected"),
    (500, 'Error "Cannot send submit_sm, check SMPPClientManagerPB log file for details"',
     GatewayTemporaryError, "server_error"),
])
def test_refusals_are_told_apart_by_their_message(status: int, body: str,
                                                  kind: type[GatewayError], reason: str) -> None:
    err = refusal(status, body)
    assert type(err) is kind and err.reason == reason and err.code == status
    assert body.split('"')[1] in str(err)  # Jasmin's own words reach the log


def test_an_answer_that_is_not_jasmins_is_ambiguous() -> None:
    err = refusal(200, "<html>proxy</html>")
    assert err.reason == "unexpected_response"
