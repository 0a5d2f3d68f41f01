"""One number's decisions in turn across agents: its advisory lock, and the function that takes
a group's locks and then reads its facts (schema migration 12).

A decision reads the number's facts (opt-out, DND, its last text per rule, its texts in the
per-number window) and then writes its rows; two agents doing that for one number at once
would each miss the other's text. A decision therefore holds the number's lock from before
its read until its rows are committed, and so does an opt-out or a DND entry. Locks are taken
in one order (``number_keys``), so transactions locking overlapping numbers (a caller and an
agent's mobile, in opposite roles) wait for each other, never in a cycle."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

# "Sent" for cooldown and rate limits: anything that reached, or is on its way to, a gateway.
# The WHERE of the partial indexes the policy read uses (schema migration 11), written into
# the reads (records.py) and into migrations 12 and 13's function: change all of them together.
SENT = "(submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"

# The class (first key) of the numbers' locks. Two-key advisory locks are a key space of their
# own, apart from the one-key ones (the migration's, the SMSC ids').
CLASS = 0x61667463  # "aftc"


def number_key(number: str) -> int:
    """The same in every process (not ``hash``, which is salted); two numbers that share a key
    only wait for each other."""
    return int.from_bytes(hashlib.blake2b(number.encode(), digest_size=4).digest(), "big",
                          signed=True)


def number_keys(numbers: Iterable[str]) -> list[int]:
    """The numbers' lock keys, each once, in the order every agent takes them."""
    return sorted({number_key(n) for n in numbers})


def lock_numbers_sql(keys: Sequence[int]) -> str:
    """The statement that waits for ``number_keys``' locks, in their order, and holds them
    until the transaction ends. Its keys are integers written into the text, so it shares a
    round trip with the BEGIN before it (a simple query), which no statement with parameters
    can."""
    array = "{" + ",".join(str(int(k)) for k in keys) + "}"
    return (f"SELECT pg_advisory_xact_lock({CLASS}, k)"
            f" FROM (SELECT unnest('{array}'::int4[]) AS k ORDER BY 1) s")


def _facts_function(name: str, lock: str, try_lock: str) -> str:
    return f"""CREATE FUNCTION {name}(
        p_keys integer[], p_numbers text[], p_rules text[], p_since timestamptz[],
        p_agents boolean[], p_wait boolean)
    RETURNS TABLE (o_busy boolean, o_opted_out boolean, o_dnd boolean,
                   o_last_sent timestamptz, o_sent bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_key integer;
        v_busy integer[] := '{{}}';
    BEGIN
        FOR v_key IN SELECT DISTINCT k FROM unnest(p_keys) AS k ORDER BY 1 LOOP
            IF p_wait THEN
                PERFORM {lock}({CLASS}, v_key);
            ELSIF NOT {try_lock}({CLASS}, v_key) THEN
                v_busy := v_busy || v_key;
            END IF;
        END LOOP;
        RETURN QUERY SELECT u.k = ANY(v_busy),
            EXISTS(SELECT 1 FROM opt_outs WHERE number = u.n),
            EXISTS(SELECT 1 FROM dnd WHERE number = u.n),
            (SELECT MAX(COALESCE(submitted_at, created_at)) FROM messages
             WHERE number = u.n AND rule = u.r AND {SENT}),
            CASE WHEN u.since IS NULL THEN 0::bigint ELSE
             (SELECT COUNT(*) FROM messages WHERE number = u.n AND {SENT}
              AND (recipient_kind = 'agent') = u.a
              AND COALESCE(submitted_at, created_at) > u.since) END
        FROM unnest(p_keys, p_numbers, p_rules, p_since, p_agents)
            WITH ORDINALITY AS u(k, n, r, since, a, i)
        ORDER BY u.i;
    END $$"""


# 12: a group of decisions' locks and facts in one round trip. Without ``p_wait`` a lock held
# elsewhere is not waited for: the asks of its number come back ``busy`` (no facts), and the
# caller decides them later, in a transaction that waits. The facts are read by a statement
# after the locks, which (in a PL/pgSQL function) takes a snapshot of its own, so it sees what
# the lock's last holder committed.
MIGRATION: tuple[str, ...] = (
    _facts_function("aftercall_decide_facts", "pg_advisory_xact_lock",
                    "pg_try_advisory_xact_lock"),
)

# 13: the same, with locks held by the session until the caller lets them go: the group's
# rows are then one statement that commits on its own, and the locks go after that commit, in
# a round trip nobody waits for (four round trips before a group's texts could go; two now).
MIGRATION_13: tuple[str, ...] = (
    "DROP FUNCTION aftercall_decide_facts",
    _facts_function("aftercall_lock_facts", "pg_advisory_lock", "pg_try_advisory_lock"),
)
