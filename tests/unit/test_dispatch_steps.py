"""The dispatcher's decisions as a table: row + outcome + time + policy + health -> step."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from agent.dispatch.retry import RetryPolicy
from agent.dispatch.steps import (
    Ambiguous,
    Due,
    Expire,
    Fail,
    Health,
    PermanentFailure,
    Policy,
    Release,
    Retry,
    Step,
    Submit,
    Suppress,
    TemporaryFailure,
    UnknownOutcome,
    Unreachable,
    next_step,
    route,
)
from agent.models import MessageState

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@dataclass(frozen=True)
class R:
    state: MessageState = MessageState.QUEUED
    gateway: str = "smsc"
    attempts: int = 1
    expires_at: datetime | None = NOW + 3600 * S
    reason: str | None = None


# No jitter (rand() == 1.0 takes nothing off): delays are initial * 2**(attempts-1), capped.
POLICY = Policy(gateways=frozenset({"smsc", "kannel", "other"}), backups={"smsc": "kannel"},
                retry=RetryPolicy(initial=1.0, max_backoff=300.0, jitter=0.2, max_attempts=5,
                                  unavailable_max_backoff=5.0),
                expiry=timedelta(hours=1), rand=lambda: 1.0)
BOTH = Health(frozenset({"smsc", "kannel"}))
PRIMARY_ONLY = Health(frozenset({"smsc"}))
BACKUP_ONLY = Health(frozenset({"kannel"}))
NONE_UP = Health(frozenset())


def temp(reason: str = "throttled", via: str = "smsc", **kw: object) -> TemporaryFailure:
    return TemporaryFailure(via=via, detail="busy", reason=reason, **kw)  # type: ignore[arg-type]


CASES: list[tuple[str, R, object, Health, Step]] = [
    # -- due rows ---------------------------------------------------------------------------
    ("due, primary up: submit through it", R(), Due(), BOTH, Submit("smsc")),
    ("due, primary down, backup up: submit through the backup", R(), Due(), BACKUP_ONLY,
     Submit("kannel")),
    ("due, both down: stay on the primary (its wait decides)", R(), Due(), NONE_UP,
     Submit("smsc")),
    ("due, no backup configured", R(gateway="other"), Due(), NONE_UP, Submit("other")),
    ("due after its expiry: expire, never submit", R(expires_at=NOW - S), Due(), BOTH,
     Expire("expiry", f"not submitted before {(NOW - S).isoformat()}")),
    ("due exactly at its expiry: still submitted", R(expires_at=NOW), Due(), BOTH,
     Submit("smsc")),
    ("due, no expiry", R(expires_at=None), Due(), BOTH, Submit("smsc")),
    ("unknown gateway: fail", R(gateway="gone"), Due(), BOTH,
     Fail("unknown_gateway", "no gateway named 'gone' is configured")),
    # -- deferral release -------------------------------------------------------------------
    ("deferred row released: queued with a fresh expiry",
     R(state=MessageState.DEFERRED, expires_at=None), Due(), BOTH,
     Release(expires_at=NOW + timedelta(hours=1))),
    ("scheduled row released: keeps its max_age expiry when sooner",
     R(state=MessageState.DEFERRED, expires_at=NOW + 600 * S, reason="scheduled"), Due(), BOTH,
     Release(expires_at=NOW + 600 * S, detail="scheduled time reached")),
    ("scheduled row released late (agent was down): its expiry is in the past",
     R(state=MessageState.DEFERRED, expires_at=NOW - S, reason="scheduled_unless_called_again"),
     Due(), BOTH, Release(expires_at=NOW - S, detail="scheduled time reached")),
    ("queued row past a scheduled expiry: expired",
     R(expires_at=NOW - S, reason=None), Due(), BOTH,
     Expire("expiry", f"not submitted before {(NOW - S).isoformat()}")),
    ("deferred row whose number opted out meanwhile: suppressed",
     R(state=MessageState.DEFERRED), Due(opted_out=True), BOTH,
     Suppress("opt_out", "recipient opted out while deferred",
              from_state=MessageState.DEFERRED)),
    ("deferred row on an unknown gateway: fail from deferred",
     R(state=MessageState.DEFERRED, gateway="gone"), Due(), BOTH,
     Fail("unknown_gateway", "no gateway named 'gone' is configured",
          from_state=MessageState.DEFERRED)),
    # -- temporary failures: backoff --------------------------------------------------------
    ("1st attempt throttled, no backup up: retry after 1s", R(attempts=1), temp(),
     PRIMARY_ONLY, Retry("smsc", NOW + S, 1.0, "smsc: busy")),
    ("3rd attempt throttled: retry after 4s", R(attempts=3), temp(), PRIMARY_ONLY,
     Retry("smsc", NOW + 4 * S, 4.0, "smsc: busy")),
    ("4th attempt: 8s", R(attempts=4, expires_at=None),
     temp(), PRIMARY_ONLY,
     Retry("smsc", NOW + 8 * S, 8.0, "smsc: busy")),
    ("the gateway's Retry-After wins when longer", R(attempts=1), temp(retry_after=30.0),
     PRIMARY_ONLY, Retry("smsc", NOW + 30 * S, 30.0, "smsc: busy")),
    ("a Retry-After shorter than the backoff is not obeyed early", R(attempts=3),
     temp(retry_after=0.5), PRIMARY_ONLY, Retry("smsc", NOW + 4 * S, 4.0, "smsc: busy")),
    ("the code travels with the retry", R(attempts=1), temp(code=88), PRIMARY_ONLY,
     Retry("smsc", NOW + S, 1.0, "smsc: busy", 88)),
    # -- failover -----------------------------------------------------------------------------
    ("primary fails temporarily, backup up: first switch is immediate", R(attempts=2), temp(),
     BOTH, Retry("kannel", NOW, 0.0, "smsc: busy; next via kannel", failover=True,
                 first_failover=True)),
    ("a row that already switched once backs off on the next switch", R(attempts=2), temp(),
     Health(frozenset({"smsc", "kannel"}), failed_over=frozenset({"m1"})),
     Retry("kannel", NOW + 2 * S, 2.0, "smsc: busy; next via kannel", failover=True)),
    ("backup down too: retry on the primary", R(attempts=2), temp(), PRIMARY_ONLY,
     Retry("smsc", NOW + 2 * S, 2.0, "smsc: busy")),
    ("a failure on the backup (it has no backup): retry there", R(gateway="smsc", attempts=2),
     temp(via="kannel"), BOTH, Retry("kannel", NOW + 2 * S, 2.0, "kannel: busy")),
    # -- unreachable gateway: not counted, short waits --------------------------------------
    ("unreachable past max_attempts is still retried, capped at 5s", R(attempts=9),
     temp(reason="connect_failed"), PRIMARY_ONLY,
     Retry("smsc", NOW + 5 * S, 5.0, "smsc: busy")),
    ("not ready in time: retried as not_bound", R(attempts=9),
     Unreachable(via="smsc", detail="busy", reason="bind_refused"), PRIMARY_ONLY,
     Retry("smsc", NOW + 5 * S, 5.0, "smsc: busy")),
    ("not ready, backup up: switch at once", R(attempts=1),
     Unreachable(via="smsc", detail="down"), BOTH,
     Retry("kannel", NOW, 0.0, "smsc: down; next via kannel", failover=True,
           first_failover=True)),
    # -- retries exhausted --------------------------------------------------------------------
    ("max_attempts reached: fail", R(attempts=5), temp(code=88), BOTH,
     Fail("retries_exhausted", "5 attempts, last: busy", 88)),
    ("one below max_attempts: retried", R(attempts=4), temp(), PRIMARY_ONLY,
     Retry("smsc", NOW + 8 * S, 8.0, "smsc: busy")),
    # -- expiry before the next attempt -----------------------------------------------------
    ("next attempt would be after expiry: expire now", R(attempts=3, expires_at=NOW + 3 * S),
     temp(code=88), PRIMARY_ONLY, Expire("expiry", "retry would be after expiry; last: busy", 88)),
    ("next attempt exactly at expiry: retried", R(attempts=3, expires_at=NOW + 4 * S), temp(),
     PRIMARY_ONLY, Retry("smsc", NOW + 4 * S, 4.0, "smsc: busy")),
    ("an immediate failover is never after expiry", R(attempts=3, expires_at=NOW),
     temp(), BOTH, Retry("kannel", NOW, 0.0, "smsc: busy; next via kannel", failover=True,
                         first_failover=True)),
    # -- permanent and ambiguous ------------------------------------------------------------
    ("permanent failure: fail at once, whatever is left",
     R(attempts=1), PermanentFailure(via="smsc", detail="bad number", reason="invalid_dest",
                                     code=11), BOTH, Fail("invalid_dest", "bad number", 11)),
    ("permanent failure even with a backup up: no failover", R(attempts=1),
     PermanentFailure(via="smsc", detail="no", reason="no_route"), BOTH,
     Fail("no_route", "no")),
    ("ambiguous outcome: never resent, even with retries and a backup left", R(attempts=1),
     UnknownOutcome(via="smsc", detail="timeout after send", reason="timeout", code="x"),
     BOTH, Ambiguous("timeout", "timeout after send", "x")),
    ("a gateway bug is ambiguous too", R(attempts=1),
     UnknownOutcome(via="smsc", detail="KeyError()"), NONE_UP,
     Ambiguous("gateway_error", "KeyError()")),
]


@pytest.mark.parametrize(("row", "outcome", "health", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_next_step(row: R, outcome: object, health: Health, expected: Step) -> None:
    assert next_step(row, outcome, NOW, POLICY, health, message_id="m1") == expected  # type: ignore[arg-type]


def test_steps_name_the_transition_they_make() -> None:
    assert (Retry("a", NOW, 0, "d").reason, Retry("a", NOW, 0, "d", failover=True).reason) == (
        "retry", "failover")
    states = {type(s).__name__: (s.from_state, s.state) for s in (
        Release(NOW), Fail("r", "d"), Expire("r", "d"), Ambiguous("r", "d"), Suppress("r", "d"))}
    assert states == {
        "Release": (MessageState.DEFERRED, MessageState.QUEUED),
        "Fail": (MessageState.QUEUED, MessageState.FAILED),
        "Expire": (MessageState.QUEUED, MessageState.EXPIRED),
        "Ambiguous": (MessageState.QUEUED, MessageState.AMBIGUOUS),
        "Suppress": (MessageState.QUEUED, MessageState.SUPPRESSED),
    }
    logged = {type(s).__name__: (s.event, s.warn) for s in (
        Fail("r", "d"), Expire("r", "d"), Ambiguous("r", "d"), Suppress("r", "d"))}
    assert logged == {"Fail": ("sms_failed", True), "Expire": ("sms_expired", True),
                      "Ambiguous": ("sms_ambiguous", True), "Suppress": ("sms_suppressed", False)}


def test_jitter_only_shortens_a_delay() -> None:
    """The draw takes up to ``jitter`` off the top: a crowd spreads, the cap stays a cap."""
    low = Policy(gateways=POLICY.gateways, retry=POLICY.retry, rand=lambda: 0.0)
    step = next_step(R(attempts=3), temp(), NOW, low, PRIMARY_ONLY)
    assert isinstance(step, Retry) and step.delay == pytest.approx(4.0 * 0.8)


def test_route() -> None:
    assert [route("smsc", POLICY, h) for h in (BOTH, BACKUP_ONLY, NONE_UP, PRIMARY_ONLY)] == [
        "smsc", "kannel", "smsc", "smsc"]
    assert route("kannel", POLICY, PRIMARY_ONLY) == "kannel"


def test_the_core_is_pure() -> None:
    """No event loop, no store, no network in the decision module."""
    import ast
    import inspect

    import agent.dispatch.steps as steps

    tree = ast.parse(inspect.getsource(steps))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.split(".")[0] in {"asyncio", "aiohttp", "sqlite3"}
                or (m or "").startswith("agent.store")}
