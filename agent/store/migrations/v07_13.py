"""SQLite migrations 7-13: compact stored shapes (the call record packed and deflated, integer
times, the rule outcomes of a trigger in one row), a call keyed by (PBX, call id), and a message's
children naming it by an integer ref."""

from __future__ import annotations

from agent.store.frozen import (
    columns_from_record_sql,
    micros_sql,
    pack_record_sql,
    state_code_sql,
)
from agent.store.migrations.columns import _TRIGGERS_ON_MESSAGES
from agent.store.rollups import MIGRATION as ROLLUPS

# The message columns as schemas 4-12 had them (migration 13 copies them).
_MESSAGE_COLUMNS = (
    "id, idempotency_key, call_id, rule, trigger, recipient_kind, number, template, gateway,"
    " sender_id, text, encoding, segments, category, dlt_template_id, dlt_entity_id, state,"
    " reason, detail, attempts, smsc_ids, error_code, created_at, queued_at, submitted_at,"
    " final_at, next_attempt_at, submitting_since, expires_at, call_ended_at,"
    " hangup_to_submit_ms, updated_at, pbx")

MIGRATIONS_7_13: tuple[tuple[str, ...], ...] = (
    # 7: compact stored shapes (a year of messages was 2.9 KB each on disk). The call record
    # leaves out what its columns hold and its empty fields (agent/store/packing.py);
    # a receipt keeps its raw text only while it matches no message, and is told apart from a
    # repeat by its fields (no JSON key and its unique index); the state history is keyed by
    # (message, position) with integer times and state codes; the due-messages index goes.
    (
        f"UPDATE calls SET {columns_from_record_sql('record')}",
        f"UPDATE calls SET record = {pack_record_sql('record', 'ended_at')}",
        """CREATE TABLE receipts_v7 (
            id          INTEGER PRIMARY KEY,
            message_id  TEXT,
            smsc_id     TEXT,
            gateway     TEXT NOT NULL,
            state       TEXT NOT NULL,
            error_code  TEXT,
            done_at     TEXT,
            received_at TEXT NOT NULL,
            raw         TEXT
        )""",
        """INSERT INTO receipts_v7 (id, message_id, smsc_id, gateway, state, error_code, done_at,
            received_at, raw)
            SELECT id, message_id, smsc_id, gateway, state, error_code, done_at, received_at,
                   CASE WHEN message_id IS NULL THEN raw END
            FROM receipts""",
        "DROP TABLE receipts",
        "ALTER TABLE receipts_v7 RENAME TO receipts",
        # Matched receipts by message, the unmatched (a few) by SMSC id and by age: each
        # lookup finds its own index (a NULL range of receipts_message would serve them all).
        "CREATE INDEX receipts_message ON receipts(message_id) WHERE message_id IS NOT NULL",
        "CREATE INDEX receipts_smsc ON receipts(gateway, smsc_id) WHERE message_id IS NULL",
        "CREATE INDEX receipts_unmatched ON receipts(received_at) WHERE message_id IS NULL",
        """CREATE TABLE message_history (
            message_id TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            at         INTEGER NOT NULL,
            state      INTEGER NOT NULL,
            reason     TEXT,
            detail     TEXT,
            PRIMARY KEY (message_id, seq)
        ) WITHOUT ROWID""",
        f"""INSERT INTO message_history (message_id, seq, at, state, reason, detail)
            SELECT message_id, row_number() OVER (PARTITION BY message_id ORDER BY id),
                   {micros_sql('at')}, {state_code_sql('state')}, reason, detail
            FROM message_events""",
        "DROP TABLE message_events",
        # Due messages are found through messages_state_created: the queued and deferred
        # ones are few (those in flight), sorting them costs nothing.
        "DROP INDEX messages_due",
    ),
    # 8: the call record deflated with a preset dictionary (it is only read whole): ~270 bytes
    # of JSON store in ~80. The function is the frozen one (frozen.MIGRATION_FUNCTIONS).
    (
        "UPDATE calls SET record = aftercall_deflate_json(record) WHERE typeof(record) = 'text'",
    ),
    # 9: a call is (PBX, call id): Asterisk without systemname numbers calls <epoch>.<n>, so two
    # PBXs sharing a database give different calls one id. Both tables are rebuilt with the PBX
    # in their key (SQLite cannot change a primary key in place); rows keep their stored PBX,
    # and an outcome takes its call's. call_id leads each key, so a bare id still finds its calls.
    (
        """CREATE TABLE calls_by_pbx (
            call_id     TEXT NOT NULL,
            record      TEXT NOT NULL,
            trigger     TEXT NOT NULL,
            disposition TEXT,
            queue       TEXT,
            caller      TEXT,
            ended_at    TEXT,
            created_at  TEXT NOT NULL,
            agent       TEXT,
            pbx         TEXT NOT NULL DEFAULT 'default',
            PRIMARY KEY (call_id, pbx)
        )""",
        (
            "INSERT INTO calls_by_pbx (call_id, record, trigger, disposition, queue, caller,"
            " ended_at, created_at, agent, pbx) SELECT call_id, record, trigger, disposition,"
            " queue, caller, ended_at, created_at, agent, COALESCE(pbx, 'default') FROM calls"
        ),
        """CREATE TABLE rule_outcomes_by_pbx (
            call_id    TEXT NOT NULL,
            pbx        TEXT NOT NULL DEFAULT 'default',
            trigger    TEXT NOT NULL,
            position   INTEGER NOT NULL,
            rule       TEXT NOT NULL,
            matched    INTEGER NOT NULL,
            reason     TEXT,
            skipped    TEXT NOT NULL DEFAULT '[]',
            decided_at TEXT NOT NULL,
            PRIMARY KEY (call_id, pbx, trigger, position)
        ) WITHOUT ROWID""",
        (
            "INSERT INTO rule_outcomes_by_pbx SELECT o.call_id,"
            " COALESCE((SELECT c.pbx FROM calls c WHERE c.call_id = o.call_id), 'default'),"
            " o.trigger, o.position, o.rule, o.matched, o.reason, o.skipped, o.decided_at"
            " FROM rule_outcomes o"
        ),
        "DROP TABLE rule_outcomes",
        "ALTER TABLE rule_outcomes_by_pbx RENAME TO rule_outcomes",
        "DROP TABLE calls",
        "ALTER TABLE calls_by_pbx RENAME TO calls",
        # the indexes the old table had (migrations 1, 2, 4 and 5)
        "CREATE INDEX calls_ended_at ON calls(ended_at)",
        "CREATE INDEX calls_caller ON calls(caller, ended_at)",
        "CREATE INDEX calls_agent ON calls(agent, ended_at)",
        "CREATE INDEX calls_pbx_ended ON calls(pbx, ended_at)",
        "CREATE INDEX calls_created ON calls(created_at)",
    ),
    # 10: what the rules said about a call is one row per (call, trigger): the outcomes in
    # position order as one compact JSON array ([rule, matched, reason, skipped], trailing empty
    # fields left out) deflated with a dictionary of the engine's reasons (frozen.ZDICT_2), the
    # decision time as integer microseconds. Three rules made three rows of ~110 bytes each,
    # repeating the call's key and time: 360 of a year's 2,330 bytes per message.
    # The SQL is written out here, not built from live helpers: migrations are history.
    (
        """CREATE TABLE rule_outcomes_v10 (
            call_id    TEXT NOT NULL,
            pbx        TEXT NOT NULL DEFAULT 'default',
            trigger    TEXT NOT NULL,
            outcomes   BLOB NOT NULL,
            decided_at INTEGER NOT NULL,
            PRIMARY KEY (call_id, pbx, trigger)
        ) WITHOUT ROWID""",
        # GROUP BY reads the old key's order (call, pbx, trigger, position): positions in order.
        """INSERT INTO rule_outcomes_v10 (call_id, pbx, trigger, outcomes, decided_at)
            SELECT call_id, pbx, trigger,
                aftercall_deflate_outcomes(json_group_array(CASE
                    WHEN skipped NOT IN ('[]', '') THEN json_array(rule, matched, reason,
                                                                   json(skipped))
                    WHEN reason IS NOT NULL THEN json_array(rule, matched, reason)
                    ELSE json_array(rule, matched) END)),
                max(CAST(strftime('%s', decided_at) AS INTEGER) * 1000000
                    + CAST(substr(decided_at, 21, 6) AS INTEGER))
            FROM (SELECT * FROM rule_outcomes ORDER BY call_id, pbx, trigger, position)
            GROUP BY call_id, pbx, trigger""",
        "DROP TABLE rule_outcomes",
        "ALTER TABLE rule_outcomes_v10 RENAME TO rule_outcomes",
    ),
    # 11: a call's times are integer microseconds since the epoch (UTC), as the history's: the
    # fixed-width text took 27 bytes where the integer takes 8, in the row and in each of the
    # five indexes that hold a time (~130 bytes a call). The table is rebuilt (a column's type
    # cannot change in place), keeping each row's rowid.
    (
        """CREATE TABLE calls_v11 (
            call_id     TEXT NOT NULL,
            record      TEXT NOT NULL,
            trigger     TEXT NOT NULL,
            disposition TEXT,
            queue       TEXT,
            caller      TEXT,
            ended_at    INTEGER,
            created_at  INTEGER NOT NULL,
            agent       TEXT,
            pbx         TEXT NOT NULL DEFAULT 'default',
            PRIMARY KEY (call_id, pbx)
        )""",
        """INSERT INTO calls_v11 (rowid, call_id, record, trigger, disposition, queue, caller,
                ended_at, created_at, agent, pbx)
            SELECT rowid, call_id, record, trigger, disposition, queue, caller,
                CAST(strftime('%s', ended_at) AS INTEGER) * 1000000
                    + CAST(substr(ended_at, 21, 6) AS INTEGER),
                CAST(strftime('%s', created_at) AS INTEGER) * 1000000
                    + CAST(substr(created_at, 21, 6) AS INTEGER),
                agent, pbx
            FROM calls""",
        "DROP TABLE calls",
        "ALTER TABLE calls_v11 RENAME TO calls",
        "CREATE INDEX calls_ended_at ON calls(ended_at)",
        "CREATE INDEX calls_caller ON calls(caller, ended_at)",
        "CREATE INDEX calls_agent ON calls(agent, ended_at)",
        "CREATE INDEX calls_pbx_ended ON calls(pbx, ended_at)",
        "CREATE INDEX calls_created ON calls(created_at)",
    ),
    # 12: the policy read before each text (records.policy_facts) costs the same whatever the
    # number's history. Through messages_number it visited every row ever sent to the number
    # (its cooldown's last send, and its per-number count, which filters on the send time):
    # an agent texted a summary per call had thousands by the hour, each a table row read
    # (1,159 rows: 11 ms per decision, and the read connection's page cache refilled to its
    # cap). Both indexes hold only sent rows, with the WHERE of records._SENT (sqlite uses a
    # partial index only when the query's WHERE has its terms): the last send of a (number,
    # rule) is one seek, the count walks only the rows inside its window.
    (
        "CREATE INDEX messages_number_rule_sent ON messages(number, rule,"
        " COALESCE(submitted_at, created_at))"
        " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))",
        "CREATE INDEX messages_number_sent ON messages(number,"
        " COALESCE(submitted_at, created_at), recipient_kind)"
        " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))",
    ),
    # 13: a message's history and segment ids name it by an integer, not its 32-character id:
    # each of its ~3 history rows repeated the id (33 bytes) in a year of 1.9 KB a message.
    # ``messages`` gains ``ref INTEGER PRIMARY KEY`` (a rowid alias: VACUUM would renumber a
    # bare rowid, which children may not rely on), so it is rebuilt, each row keeping its rowid
    # as its ref; its indexes are made again, and the report triggers (a dropped table takes its
    # own, and the others name it) are made again from schema 5's SQL, unchanged.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        """CREATE TABLE messages_v13 (
            id                  TEXT NOT NULL UNIQUE,
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
            updated_at          TEXT NOT NULL,
            pbx                 TEXT NOT NULL DEFAULT 'default',
            ref                 INTEGER PRIMARY KEY
        )""",
        f"INSERT INTO messages_v13 ({_MESSAGE_COLUMNS}, ref)"
        f" SELECT {_MESSAGE_COLUMNS}, rowid FROM messages",
        """CREATE TABLE message_history_v13 (
            msg    INTEGER NOT NULL,
            seq    INTEGER NOT NULL,
            at     INTEGER NOT NULL,
            state  INTEGER NOT NULL,
            reason TEXT,
            detail TEXT,
            PRIMARY KEY (msg, seq)
        ) WITHOUT ROWID""",
        """INSERT INTO message_history_v13 (msg, seq, at, state, reason, detail)
            SELECT m.ref, h.seq, h.at, h.state, h.reason, h.detail
            FROM message_history h JOIN messages_v13 m ON m.id = h.message_id""",
        """CREATE TABLE message_smsc_ids_v13 (
            gateway TEXT NOT NULL,
            smsc_id TEXT NOT NULL,
            msg     INTEGER NOT NULL,
            PRIMARY KEY (gateway, smsc_id, msg)
        ) WITHOUT ROWID""",
        """INSERT INTO message_smsc_ids_v13 (gateway, smsc_id, msg)
            SELECT s.gateway, s.smsc_id, m.ref
            FROM message_smsc_ids s JOIN messages_v13 m ON m.id = s.message_id""",
        "DROP TABLE message_history",
        "DROP TABLE message_smsc_ids",
        "DROP TABLE messages",
        "ALTER TABLE messages_v13 RENAME TO messages",
        "ALTER TABLE message_history_v13 RENAME TO message_history",
        "ALTER TABLE message_smsc_ids_v13 RENAME TO message_smsc_ids",
        # the indexes the old table had (migrations 1, 4, 5 and 12)
        "CREATE INDEX messages_call ON messages(call_id)",
        "CREATE INDEX messages_number ON messages(number, created_at)",
        "CREATE INDEX messages_created ON messages(created_at)",
        "CREATE INDEX messages_submitted ON messages(submitted_at)",
        "CREATE INDEX messages_in_flight ON messages(submitting_since)"
        " WHERE submitting_since IS NOT NULL",
        "CREATE INDEX messages_pbx_created ON messages(pbx, created_at)",
        "CREATE INDEX messages_state_created ON messages(state, created_at)",
        "CREATE INDEX messages_unpruned ON messages(created_at)"
        " WHERE text IS NOT NULL OR number IS NOT NULL",
        "CREATE INDEX messages_number_rule_sent ON messages(number, rule,"
        " COALESCE(submitted_at, created_at))"
        " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))",
        "CREATE INDEX messages_number_sent ON messages(number,"
        " COALESCE(submitted_at, created_at), recipient_kind)"
        " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))",
        *(s for s in ROLLUPS if s.lstrip().startswith("CREATE TRIGGER")),
    ),
)
