"""SQLite migrations 1-6: the first schema and the tables its first features added (rule
outcomes, list history, webhook nonces, PBXs, report rollups, language preferences)."""

from __future__ import annotations

from agent.store.rollups import MIGRATION as ROLLUPS

# Times are TEXT in one fixed-width UTC form ("2024-05-01T09:00:00.000000Z"), so string order is
# time order, indexes work, and sqlite's date functions still read them (reports use them).
MIGRATIONS_1_6: tuple[tuple[str, ...], ...] = (
    # 1: the initial schema
    (
        """CREATE TABLE calls (
            call_id     TEXT PRIMARY KEY,
            record      TEXT NOT NULL,
            trigger     TEXT NOT NULL,
            disposition TEXT,
            queue       TEXT,
            caller      TEXT,
            ended_at    TEXT,
            created_at  TEXT NOT NULL
        )""",
        "CREATE INDEX calls_ended_at ON calls(ended_at)",
        """CREATE TABLE messages (
            id                  TEXT PRIMARY KEY,
            idempotency_key     TEXT NOT NULL UNIQUE,
            call_id             TEXT NOT NULL,
            rule                TEXT NOT NULL,
            trigger             TEXT NOT NULL,
            recipient_kind      TEXT NOT NULL,
            number              TEXT,
            template            TEXT NOT NULL,
            gateway             TEXT NOT NULL,
            sender_id           TEXT NOT NULL,
            text                TEXT,
            encoding            TEXT NOT NULL,
            segments            INTEGER NOT NULL,
            category            TEXT NOT NULL,
            dlt_template_id     TEXT,
            dlt_entity_id       TEXT,
            state               TEXT NOT NULL,
            reason              TEXT,
            detail              TEXT,
            attempts            INTEGER NOT NULL DEFAULT 0,
            smsc_ids            TEXT NOT NULL DEFAULT '[]',
            error_code          TEXT,
            created_at          TEXT NOT NULL,
            queued_at           TEXT,
            submitted_at        TEXT,
            final_at            TEXT,
            next_attempt_at     TEXT,
            submitting_since    TEXT,
            expires_at          TEXT,
            call_ended_at       TEXT,
            hangup_to_submit_ms REAL,
            updated_at          TEXT NOT NULL
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
            gateway    TEXT NOT NULL,
            smsc_id    TEXT NOT NULL,
            message_id TEXT NOT NULL,
            PRIMARY KEY (gateway, smsc_id, message_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE message_events (
            id         INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL,
            at         TEXT NOT NULL,
            state      TEXT NOT NULL,
            reason     TEXT,
            detail     TEXT
        )""",
        "CREATE INDEX message_events_message ON message_events(message_id, id)",
        """CREATE TABLE receipts (
            id          INTEGER PRIMARY KEY,
            message_id  TEXT,
            smsc_id     TEXT,
            gateway     TEXT NOT NULL,
            state       TEXT NOT NULL,
            error_code  TEXT,
            done_at     TEXT,
            received_at TEXT NOT NULL,
            raw         TEXT NOT NULL DEFAULT '',
            dedupe_key  TEXT NOT NULL UNIQUE
        )""",
        "CREATE INDEX receipts_message ON receipts(message_id)",
        "CREATE INDEX receipts_smsc ON receipts(gateway, smsc_id)",
        """CREATE TABLE opt_outs (
            number TEXT PRIMARY KEY,
            at     TEXT NOT NULL,
            source TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE dnd (
            number TEXT PRIMARY KEY,
            at     TEXT NOT NULL,
            source TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE links (
            code       TEXT PRIMARY KEY,
            message_id TEXT,
            url        TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX links_message ON links(message_id)",
        """CREATE TABLE clicks (
            id         INTEGER PRIMARY KEY,
            code       TEXT NOT NULL,
            at         TEXT NOT NULL,
            user_agent TEXT
        )""",
        "CREATE INDEX clicks_code ON clicks(code)",
        """CREATE TABLE replies (
            id          INTEGER PRIMARY KEY,
            message_id  TEXT,
            gateway     TEXT NOT NULL,
            number      TEXT NOT NULL,
            recipient   TEXT,
            text        TEXT NOT NULL,
            keyword     TEXT,
            action      TEXT,
            sentiment   REAL,
            rating      INTEGER,
            received_at TEXT NOT NULL
        )""",
        "CREATE INDEX replies_message ON replies(message_id)",
        "CREATE INDEX replies_received ON replies(received_at)",
        # health() writes here: a cheap write that proves the disk takes writes.
        "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL)",
    ),
    # 2: what each rule said about a call (the calls view is `explain` from stored data), the
    # history of the opt-out and DND lists (who changed what, when), and calls by caller/agent.
    (
        """CREATE TABLE rule_outcomes (
            call_id    TEXT NOT NULL,
            trigger    TEXT NOT NULL,
            position   INTEGER NOT NULL,
            rule       TEXT NOT NULL,
            matched    INTEGER NOT NULL,
            reason     TEXT,
            skipped    TEXT NOT NULL DEFAULT '[]',
            decided_at TEXT NOT NULL,
            PRIMARY KEY (call_id, trigger, position)
        ) WITHOUT ROWID""",
        """CREATE TABLE list_events (
            id     INTEGER PRIMARY KEY,
            number TEXT NOT NULL,
            list   TEXT NOT NULL,
            action TEXT NOT NULL,
            at     TEXT NOT NULL,
            who    TEXT NOT NULL
        )""",
        "CREATE INDEX list_events_number ON list_events(number, id)",
        "ALTER TABLE calls ADD COLUMN agent TEXT",
        "UPDATE calls SET agent = json_extract(record, '$.agent')",
        "CREATE INDEX calls_caller ON calls(caller, ended_at)",
        "CREATE INDEX calls_agent ON calls(agent, ended_at)",
    ),
    # 3: webhook nonces seen, so a replayed webhook is refused after a restart too
    (
        """CREATE TABLE webhook_nonces (
            nonce      TEXT PRIMARY KEY,
            expires_at TEXT NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX webhook_nonces_expiry ON webhook_nonces(expires_at)",
    ),
    # 4: several PBXs may share a database (PostgreSQL): each message and call names its PBX
    (
        "ALTER TABLE messages ADD COLUMN pbx TEXT NOT NULL DEFAULT 'default'",
        "CREATE INDEX messages_pbx_created ON messages(pbx, created_at)",
        "ALTER TABLE calls ADD COLUMN pbx TEXT NOT NULL DEFAULT 'default'",
        "UPDATE calls SET pbx = COALESCE(json_extract(record, '$.pbx'), 'default')",
        "CREATE INDEX calls_pbx_ended ON calls(pbx, ended_at)",
    ),
    # 5: daily report rollups kept by triggers, and the indexes a year of data needs
    ROLLUPS,
    # 6: the language a number asked for (a reply keyword such as HINDI): rules/language.py
    (
        """CREATE TABLE language_prefs (
            number   TEXT PRIMARY KEY,
            language TEXT NOT NULL,
            at       TEXT NOT NULL,
            source   TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
)
