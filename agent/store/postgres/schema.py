"""Versioned PostgreSQL schema: migration N brings ``aftercall_schema.version`` from N-1 to N."""

from __future__ import annotations

from agent.store.postgres.functions import MIGRATION as FUNCTIONS
from agent.store.postgres.functions import MIGRATION_8 as SUBMIT_WITH_RECEIPTS
from agent.store.postgres.numbers import MIGRATION as DECIDE_FACTS
from agent.store.postgres.numbers import MIGRATION_13 as LOCK_FACTS
from agent.store.postgres.rollups import MIGRATION as ROLLUPS

# The same tables as the SQLite store, in PostgreSQL's own types: times are timestamptz,
# segment ids a text[]. ``claimed_by`` names the agent that started a submit, so an agent that
# restarts only calls its own interrupted submits ambiguous, not a live peer's.
# Append new migrations; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial schema
    (
        """CREATE TABLE calls (
            call_id     text PRIMARY KEY,
            record      jsonb NOT NULL,
            trigger     text NOT NULL,
            disposition text,
            queue       text,
            caller      text,
            ended_at    timestamptz,
            created_at  timestamptz NOT NULL
        )""",
        "CREATE INDEX calls_ended_at ON calls(ended_at)",
        """CREATE TABLE messages (
            id                  text PRIMARY KEY,
            idempotency_key     text NOT NULL UNIQUE,
            call_id             text NOT NULL,
            rule                text NOT NULL,
            trigger             text NOT NULL,
            recipient_kind      text NOT NULL,
            number              text,
            template            text NOT NULL,
            gateway             text NOT NULL,
            sender_id           text NOT NULL,
            text                text,
            encoding            text NOT NULL,
            segments            integer NOT NULL,
            category            text NOT NULL,
            dlt_template_id     text,
            dlt_entity_id       text,
            state               text NOT NULL,
            reason              text,
            detail              text,
            attempts            integer NOT NULL DEFAULT 0,
            smsc_ids            text[] NOT NULL DEFAULT '{}',
            error_code          text,
            created_at          timestamptz NOT NULL,
            queued_at           timestamptz,
            submitted_at        timestamptz,
            final_at            timestamptz,
            next_attempt_at     timestamptz,
            submitting_since    timestamptz,
            claimed_by          text,
            expires_at          timestamptz,
            call_ended_at       timestamptz,
            hangup_to_submit_ms double precision,
            updated_at          timestamptz NOT NULL
        )""",
        "CREATE INDEX messages_due ON messages(state, next_attempt_at)",
        "CREATE INDEX messages_call ON messages(call_id)",
        "CREATE INDEX messages_number ON messages(number, created_at)",
        "CREATE INDEX messages_created ON messages(created_at)",
        "CREATE INDEX messages_submitted ON messages(submitted_at)",
        (
            "CREATE INDEX messages_in_flight ON messages(submitting_since)"
            " WHERE submitting_since IS NOT NULL"
        ),
        # One row per segment id: receipts for any segment of a long message find the message.
        """CREATE TABLE message_smsc_ids (
            gateway    text NOT NULL,
            smsc_id    text NOT NULL,
            message_id text NOT NULL,
            PRIMARY KEY (gateway, smsc_id, message_id)
        )""",
        """CREATE TABLE message_events (
            id         bigserial PRIMARY KEY,
            message_id text NOT NULL,
            at         timestamptz NOT NULL,
            state      text NOT NULL,
            reason     text,
            detail     text
        )""",
        "CREATE INDEX message_events_message ON message_events(message_id, id)",
        """CREATE TABLE receipts (
            id          bigserial PRIMARY KEY,
            message_id  text,
            smsc_id     text,
            gateway     text NOT NULL,
            state       text NOT NULL,
            error_code  text,
            done_at     timestamptz,
            received_at timestamptz NOT NULL,
            raw         text NOT NULL DEFAULT '',
            dedupe_key  text NOT NULL UNIQUE
        )""",
        "CREATE INDEX receipts_message ON receipts(message_id)",
        "CREATE INDEX receipts_smsc ON receipts(gateway, smsc_id)",
        """CREATE TABLE opt_outs (
            number text PRIMARY KEY,
            at     timestamptz NOT NULL,
            source text NOT NULL
        )""",
        """CREATE TABLE dnd (
            number text PRIMARY KEY,
            at     timestamptz NOT NULL,
            source text NOT NULL
        )""",
        """CREATE TABLE links (
            code       text PRIMARY KEY,
            message_id text,
            url        text NOT NULL,
            created_at timestamptz NOT NULL
        )""",
        "CREATE INDEX links_message ON links(message_id)",
        """CREATE TABLE clicks (
            id         bigserial PRIMARY KEY,
            code       text NOT NULL,
            at         timestamptz NOT NULL,
            user_agent text
        )""",
        "CREATE INDEX clicks_code ON clicks(code)",
        """CREATE TABLE replies (
            id          bigserial PRIMARY KEY,
            message_id  text,
            gateway     text NOT NULL,
            number      text NOT NULL,
            recipient   text,
            text        text NOT NULL,
            keyword     text,
            action      text,
            sentiment   double precision,
            rating      integer,
            received_at timestamptz NOT NULL
        )""",
        "CREATE INDEX replies_message ON replies(message_id)",
        "CREATE INDEX replies_received ON replies(received_at)",
        # health() writes here, one row per agent: a cheap write that proves the database
        # takes writes, and a list of the agents sharing it.
        "CREATE TABLE heartbeat (agent text PRIMARY KEY, at timestamptz NOT NULL)",
    ),
    # 2: what each rule said about a call (the calls view), the history of the opt-out and DND
    # lists, and calls by caller/agent (as SQLite's migration 2).
    (
        """CREATE TABLE rule_outcomes (
            call_id    text NOT NULL,
            trigger    text NOT NULL,
            position   integer NOT NULL,
            rule       text NOT NULL,
            matched    boolean NOT NULL,
            reason     text,
            skipped    jsonb NOT NULL DEFAULT '[]',
            decided_at timestamptz NOT NULL,
            PRIMARY KEY (call_id, trigger, position)
        )""",
        """CREATE TABLE list_events (
            id     bigserial PRIMARY KEY,
            number text NOT NULL,
            list   text NOT NULL,
            action text NOT NULL,
            at     timestamptz NOT NULL,
            who    text NOT NULL
        )""",
        "CREATE INDEX list_events_number ON list_events(number, id)",
        "ALTER TABLE calls ADD COLUMN agent text",
        "UPDATE calls SET agent = record->>'agent'",
        "CREATE INDEX calls_caller ON calls(caller, ended_at)",
        "CREATE INDEX calls_agent ON calls(agent, ended_at)",
    ),
    # 3: webhook nonces seen, so a replayed webhook is refused after a restart too (and by
    # every agent sharing the database)
    (
        """CREATE TABLE webhook_nonces (
            nonce      text PRIMARY KEY,
            expires_at timestamptz NOT NULL
        )""",
        "CREATE INDEX webhook_nonces_expiry ON webhook_nonces(expires_at)",
    ),
    # 4: several PBXs share the database: each message and call names its PBX
    (
        "ALTER TABLE messages ADD COLUMN pbx text NOT NULL DEFAULT 'default'",
        "CREATE INDEX messages_pbx_created ON messages(pbx, created_at)",
        "ALTER TABLE calls ADD COLUMN pbx text NOT NULL DEFAULT 'default'",
        "UPDATE calls SET pbx = COALESCE(record->>'pbx', 'default')",
        "CREATE INDEX calls_pbx_ended ON calls(pbx, ended_at)",
    ),
    # 5: the language a number asked for (a reply keyword such as HINDI): rules/language.py
    (
        """CREATE TABLE language_prefs (
            number   text PRIMARY KEY,
            language text NOT NULL,
            at       timestamptz NOT NULL,
            source   text NOT NULL
        )""",
    ),
    # 6: the reports' daily rollups per PBX, appended to by triggers and folded (rollups.py)
    ROLLUPS,
    # 7: a submit's record and a receipt, each one round trip (functions.py)
    FUNCTIONS,
    # 8: a submit's record applies the receipts that came before it (functions.py)
    SUBMIT_WITH_RECEIPTS,
    # 9: a call is (PBX, call id): Asterisk without systemname numbers calls <epoch>.<n>, so two
    # PBXs sharing the database give different calls one id. The keys take the PBX; rows keep
    # their stored PBX, and an outcome takes its call's. call_id leads each key, so a bare id
    # still finds its calls.
    (
        "ALTER TABLE calls DROP CONSTRAINT calls_pkey, ADD PRIMARY KEY (call_id, pbx)",
        "ALTER TABLE rule_outcomes ADD COLUMN pbx text NOT NULL DEFAULT 'default'",
        "UPDATE rule_outcomes o SET pbx = c.pbx FROM calls c WHERE c.call_id = o.call_id",
        (
            "ALTER TABLE rule_outcomes DROP CONSTRAINT rule_outcomes_pkey,"
            " ADD PRIMARY KEY (call_id, pbx, trigger, position)"
        ),
    ),
    # 10: which agent wrote each message, so that each agent counts the texts the others sent
    # in its rate limits and spend totals (dispatch/peers.py); rows written before it name none.
    (
        "ALTER TABLE messages ADD COLUMN written_by text",
    ),
    # 11: the policy read before each text (records._read_facts) costs the same whatever the
    # number's history: through messages_number it visited every row ever sent to the number
    # for its last send per rule and its per-number count (an agent texted a summary per call
    # has thousands by the hour). Both indexes hold only sent rows, with the WHERE of
    # records._SENT (the planner uses a partial index when the query's WHERE implies it): the
    # last send of a (number, rule) is one seek, the count walks only its window.
    (
        "CREATE INDEX messages_number_rule_sent ON messages(number, rule,"
        " (COALESCE(submitted_at, created_at)))"
        " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))",
        "CREATE INDEX messages_number_sent ON messages(number,"
        " (COALESCE(submitted_at, created_at)), recipient_kind)"
        " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))",
    ),
    # 12: decisions about one number in turn across agents: a group's locks and facts in one
    # round trip (numbers.py)
    DECIDE_FACTS,
    # 13: those locks held by the session, let go after the rows' own commit (numbers.py)
    LOCK_FACTS,
)

LATEST_VERSION = len(MIGRATIONS)
