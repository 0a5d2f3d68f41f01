"""SQLite migrations 14-20: receipts by ref, the idempotency key as a digest, integer times for
receipts and every message time, and what the rules said about a call in its own row."""

from __future__ import annotations

from agent.store.frozen import micros_sql_v16
from agent.store.migrations.columns import (
    _MESSAGE_INDEXES_V15,
    _TRIGGERS_ON_MESSAGES,
    _V15_COLUMNS,
)
from agent.store.rollups import MICROS, triggers
from agent.store.rollups import MIGRATION as ROLLUPS

# Schema 15's columns as migration 17 copies them: three times become integers.
_V17_FROM_V15 = _V15_COLUMNS
for _c in ("queued_at", "expires_at", "call_ended_at"):
    _V17_FROM_V15 = _V17_FROM_V15.replace(f" {_c},", f" {micros_sql_v16(_c)},")
# Schema 17's columns as migration 19 copies them: the five times still text become integers.
_V19_FROM_V17 = _V15_COLUMNS
for _c in ("created_at", "submitted_at", "final_at", "next_attempt_at", "submitting_since"):
    _V19_FROM_V17 = _V19_FROM_V17.replace(f" {_c},", f" {micros_sql_v16(_c)},")

MIGRATIONS_14_20: tuple[tuple[str, ...], ...] = (
    # 14: a receipt names its message by ref (schema 13) too, in ``msg``: the 32-character id
    # was 33 bytes in each receipt and again in its index (receipts 118 + 35 B a message).
    # NULL: not (yet) matched to a message, as message_id was. Rebuilt keeping each id.
    (
        """CREATE TABLE receipts_v14 (
            id          INTEGER PRIMARY KEY,
            msg         INTEGER,
            smsc_id     TEXT,
            gateway     TEXT NOT NULL,
            state       TEXT NOT NULL,
            error_code  TEXT,
            done_at     TEXT,
            received_at TEXT NOT NULL,
            raw         TEXT
        )""",
        """INSERT INTO receipts_v14 (id, msg, smsc_id, gateway, state, error_code, done_at,
                received_at, raw)
            SELECT r.id, m.ref, r.smsc_id, r.gateway, r.state, r.error_code, r.done_at,
                r.received_at, r.raw
            FROM receipts r LEFT JOIN messages m ON m.id = r.message_id""",
        "DROP TABLE receipts",
        "ALTER TABLE receipts_v14 RENAME TO receipts",
        "CREATE INDEX receipts_message ON receipts(msg) WHERE msg IS NOT NULL",
        "CREATE INDEX receipts_smsc ON receipts(gateway, smsc_id) WHERE msg IS NULL",
        "CREATE INDEX receipts_unmatched ON receipts(received_at) WHERE msg IS NULL",
    ),
    # 15: a message's idempotency key is stored as a 64-bit digest (``idem``, packing.key_digest)
    # where its ~50-character text took ~110 bytes in the row and its unique index; NULL once
    # retention has pruned the row (the key held its number). ``updated_at`` goes (nothing read
    # it; the row's own times say when it last changed). The index of states holds only the
    # states a query looks for by state (the outbox's, and the SMS log's rarer statuses), not
    # the delivered and suppressed rows that are most of a year; ``messages_submitted`` goes
    # (no query's plan uses it). Rebuilt as in migration 13, keeping each row's ref.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        """CREATE TABLE messages_v15 (
            id                  TEXT NOT NULL UNIQUE,
            idem                INTEGER UNIQUE,
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
            pbx                 TEXT NOT NULL DEFAULT 'default',
            ref                 INTEGER PRIMARY KEY
        )""",
        (f"INSERT INTO messages_v15 ({_V15_COLUMNS}, idem, ref)"
         f" SELECT {_V15_COLUMNS}, CASE WHEN idempotency_key LIKE 'pruned:%' THEN NULL"
         " ELSE aftercall_key_digest(idempotency_key) END, ref FROM messages"),
        "DROP TABLE messages",
        "ALTER TABLE messages_v15 RENAME TO messages",
        *_MESSAGE_INDEXES_V15,
        *(s for s in ROLLUPS if s.lstrip().startswith("CREATE TRIGGER")),
    ),
    # 16: a receipt's times are integer microseconds since the epoch (UTC), as the history's
    # and the calls': the fixed-width text took 27 bytes each where the integer takes 8 (~38
    # bytes a message). Rebuilt keeping each id; the SMS log formats them back as it showed them.
    (
        """CREATE TABLE receipts_v16 (
            id          INTEGER PRIMARY KEY,
            msg         INTEGER,
            smsc_id     TEXT,
            gateway     TEXT NOT NULL,
            state       TEXT NOT NULL,
            error_code  TEXT,
            done_at     INTEGER,
            received_at INTEGER NOT NULL,
            raw         TEXT
        )""",
        f"""INSERT INTO receipts_v16 (id, msg, smsc_id, gateway, state, error_code, done_at,
                received_at, raw)
            SELECT id, msg, smsc_id, gateway, state, error_code, {micros_sql_v16('done_at')},
                {micros_sql_v16('received_at')}, raw
            FROM receipts""",
        "DROP TABLE receipts",
        "ALTER TABLE receipts_v16 RENAME TO receipts",
        "CREATE INDEX receipts_message ON receipts(msg) WHERE msg IS NOT NULL",
        "CREATE INDEX receipts_smsc ON receipts(gateway, smsc_id) WHERE msg IS NULL",
        "CREATE INDEX receipts_unmatched ON receipts(received_at) WHERE msg IS NULL",
    ),
    # 17: a message's times that no query compares or aggregates (queued_at, expires_at,
    # call_ended_at: read back with the row, written by the outbox) are integer microseconds,
    # as the history's, the calls' and the receipts': 8 bytes where the text took 27 (~36 bytes
    # a message). The others stay text for now: the rollup triggers, the SMS log's SQL shared
    # with PostgreSQL and the policy reads compare them. Rebuilt as in migration 15.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        """CREATE TABLE messages_v17 (
            id                  TEXT NOT NULL UNIQUE,
            idem                INTEGER UNIQUE,
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
            queued_at           INTEGER,
            submitted_at        TEXT,
            final_at            TEXT,
            next_attempt_at     TEXT,
            submitting_since    TEXT,
            expires_at          INTEGER,
            call_ended_at       INTEGER,
            hangup_to_submit_ms REAL,
            pbx                 TEXT NOT NULL DEFAULT 'default',
            ref                 INTEGER PRIMARY KEY
        )""",
        (f"INSERT INTO messages_v17 ({_V15_COLUMNS}, idem, ref)"
         f" SELECT {_V17_FROM_V15}, idem, ref FROM messages"),
        "DROP TABLE messages",
        "ALTER TABLE messages_v17 RENAME TO messages",
        *_MESSAGE_INDEXES_V15,
        *(s for s in ROLLUPS if s.lstrip().startswith("CREATE TRIGGER")),
    ),
    # 18: what the rules said when a call completed lives in the call's row (``outcomes``;
    # ``decided_at`` as microseconds after the row's created_at, 0 when judged as it was
    # stored), where its own row in rule_outcomes repeated the call's key and the trigger as
    # text (~45 bytes a call). rule_outcomes keeps the other judgements (connect time) and any
    # of a call not stored. A call's trigger and disposition are codes
    # (packing.TRIGGER_CODES, DISPOSITION_CODES; a word without one is kept as it was). The
    # record keeps a completed call's UTC start and answer as microseconds off where its end,
    # duration and wait put them (frozen.relative_times_v18: ~30 bytes a call). The table is
    # rebuilt keeping each row's rowid.
    (
        """CREATE TABLE calls_v18 (
            call_id     TEXT NOT NULL,
            record      TEXT NOT NULL,
            trigger     INTEGER NOT NULL,
            disposition INTEGER,
            queue       TEXT,
            caller      TEXT,
            ended_at    INTEGER,
            created_at  INTEGER NOT NULL,
            agent       TEXT,
            pbx         TEXT NOT NULL DEFAULT 'default',
            outcomes    BLOB,
            decided_at  INTEGER,
            PRIMARY KEY (call_id, pbx)
        )""",
        """INSERT INTO calls_v18 (rowid, call_id, record, trigger, disposition, queue, caller,
                ended_at, created_at, agent, pbx, outcomes, decided_at)
            SELECT c.rowid, c.call_id, aftercall_relative_times(c.record, c.ended_at),
                CASE c.trigger WHEN 'call_connected' THEN 0 WHEN 'call_completed' THEN 1
                    ELSE c.trigger END,
                CASE c.disposition WHEN 'answered' THEN 0 WHEN 'missed' THEN 1
                    WHEN 'abandoned' THEN 2 WHEN 'busy' THEN 3 WHEN 'failed' THEN 4
                    WHEN 'voicemail' THEN 5 ELSE c.disposition END,
                c.queue, c.caller, c.ended_at, c.created_at, c.agent, c.pbx,
                o.outcomes, o.decided_at - c.created_at
            FROM calls c LEFT JOIN rule_outcomes o
                ON o.call_id = c.call_id AND o.pbx = c.pbx AND o.trigger = 'call_completed'""",
        """DELETE FROM rule_outcomes WHERE trigger = 'call_completed'
            AND (call_id, pbx) IN (SELECT call_id, pbx FROM calls)""",
        "DROP TABLE calls",
        "ALTER TABLE calls_v18 RENAME TO calls",
        "CREATE INDEX calls_ended_at ON calls(ended_at)",
        "CREATE INDEX calls_caller ON calls(caller, ended_at)",
        "CREATE INDEX calls_agent ON calls(agent, ended_at)",
        "CREATE INDEX calls_pbx_ended ON calls(pbx, ended_at)",
        "CREATE INDEX calls_created ON calls(created_at)",
    ),
    # 19: a message's other five times (created, submitted, final, next attempt, submitting
    # since) are integer microseconds too: 8 bytes where the text took 27, in the row and in
    # each of the six indexes that hold created_at or COALESCE(submitted_at, created_at)
    # (~170 bytes a message). The report triggers read them as integers (rollups.MICROS: the
    # same UTC day and quarter hour as from the text, and the same delivery seconds to the bit
    # but where a time fell in a second's last half millisecond, which the text read as the
    # next second), so the rollups kept from before go on adding up. Rebuilt as in migration 15.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        """CREATE TABLE messages_v19 (
            id                  TEXT NOT NULL UNIQUE,
            idem                INTEGER UNIQUE,
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
            created_at          INTEGER NOT NULL,
            queued_at           INTEGER,
            submitted_at        INTEGER,
            final_at            INTEGER,
            next_attempt_at     INTEGER,
            submitting_since    INTEGER,
            expires_at          INTEGER,
            call_ended_at       INTEGER,
            hangup_to_submit_ms REAL,
            pbx                 TEXT NOT NULL DEFAULT 'default',
            ref                 INTEGER PRIMARY KEY
        )""",
        (f"INSERT INTO messages_v19 ({_V15_COLUMNS}, idem, ref)"
         f" SELECT {_V19_FROM_V17}, idem, ref FROM messages"),
        "DROP TABLE messages",
        "ALTER TABLE messages_v19 RENAME TO messages",
        *_MESSAGE_INDEXES_V15,
        *triggers(MICROS),
    ),
    # 20: a judgement's list of rule names (rules.yaml's, the same for every call it judges,
    # and most of what dictionary 2 cannot compress) is stored once in rule_names, and each
    # judgement names it by id and deflates with those names as its dictionary (packing's
    # form 3, frozen.named_outcomes_v20): ~55 bytes a judgement of three rules in ~17.
    (
        "CREATE TABLE rule_names (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE)",
        """INSERT OR IGNORE INTO rule_names (names)
            SELECT aftercall_outcome_names(outcomes) FROM calls
            WHERE outcomes IS NOT NULL ORDER BY rowid""",
        """INSERT OR IGNORE INTO rule_names (names)
            SELECT aftercall_outcome_names(outcomes) FROM rule_outcomes
            ORDER BY call_id, pbx, trigger""",
        """UPDATE calls SET outcomes = aftercall_named_outcomes(outcomes,
                (SELECT id FROM rule_names WHERE names = aftercall_outcome_names(calls.outcomes)))
            WHERE outcomes IS NOT NULL""",
        """UPDATE rule_outcomes SET outcomes = aftercall_named_outcomes(outcomes,
                (SELECT id FROM rule_names
                 WHERE names = aftercall_outcome_names(rule_outcomes.outcomes)))""",
    ),
)
