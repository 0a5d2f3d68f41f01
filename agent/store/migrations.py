"""Versioned SQLite schema: migration N brings ``PRAGMA user_version`` from N-1 to N."""

from __future__ import annotations

from agent.store.frozen import (
    columns_from_record_sql,
    micros_sql,
    micros_sql_v16,
    pack_record_sql,
    state_code_sql,
)
from agent.store.rollups import BY_REF, MICROS
from agent.store.rollups import MIGRATION as ROLLUPS
from agent.store.rollups import triggers

# Schema 5's report triggers that read ``messages`` (migration 13 makes them again).
_TRIGGERS_ON_MESSAGES = ("report_message_inserted", "report_message_changed",
                         "report_link_added", "report_link_attributed", "report_click_added",
                         "report_reply_added")
# The message columns as schemas 4-12 had them (migration 13 copies them).
_MESSAGE_COLUMNS = (
    "id, idempotency_key, call_id, rule, trigger, recipient_kind, number, template, gateway,"
    " sender_id, text, encoding, segments, category, dlt_template_id, dlt_entity_id, state,"
    " reason, detail, attempts, smsc_ids, error_code, created_at, queued_at, submitted_at,"
    " final_at, next_attempt_at, submitting_since, expires_at, call_ended_at,"
    " hangup_to_submit_ms, updated_at, pbx")
# The columns schemas 13 and 14 and schema 15 share (migration 15 copies them).
_V15_COLUMNS = (
    "id, call_id, rule, trigger, recipient_kind, number, template, gateway, sender_id, text,"
    " encoding, segments, category, dlt_template_id, dlt_entity_id, state, reason, detail,"
    " attempts, smsc_ids, error_code, created_at, queued_at, submitted_at, final_at,"
    " next_attempt_at, submitting_since, expires_at, call_ended_at, hangup_to_submit_ms, pbx")
# Schema 15's columns as migration 17 copies them: three times become integers.
_V17_FROM_V15 = _V15_COLUMNS
for _c in ("queued_at", "expires_at", "call_ended_at"):
    _V17_FROM_V15 = _V17_FROM_V15.replace(f" {_c},", f" {micros_sql_v16(_c)},")
# Schema 17's columns as migration 19 copies them: the five times still text become integers.
_V19_FROM_V17 = _V15_COLUMNS
for _c in ("created_at", "submitted_at", "final_at", "next_attempt_at", "submitting_since"):
    _V19_FROM_V17 = _V19_FROM_V17.replace(f" {_c},", f" {micros_sql_v16(_c)},")
# Schema 19's columns as migration 25 copies them: four labels become codes (packing's
# TRIGGER_CODES and MESSAGE_LABELS as they were then; a word without a code is kept as it is).
_V25_FROM_V19 = _V15_COLUMNS
for _c, _case in (
        ("trigger", "WHEN 'call_connected' THEN 0 WHEN 'call_completed' THEN 1"),
        ("recipient_kind", "WHEN 'caller' THEN 0 WHEN 'agent' THEN 1 WHEN 'fixed' THEN 2"),
        ("encoding", "WHEN 'GSM-7' THEN 0 WHEN 'UCS-2' THEN 1"),
        ("category", "WHEN 'transactional' THEN 0 WHEN 'promotional' THEN 1"
                     " WHEN 'service' THEN 2")):
    _V25_FROM_V19 = _V25_FROM_V19.replace(f" {_c},", f" CASE {_c} {_case} ELSE {_c} END,")

# messages' indexes since schema 15 (migrations 15 and 17 make them): those schema 14 had, but
# messages_submitted and messages_state_created.
_MESSAGE_INDEXES_V15 = (
    "CREATE INDEX messages_call ON messages(call_id)",
    "CREATE INDEX messages_number ON messages(number, created_at)",
    "CREATE INDEX messages_created ON messages(created_at)",
    ("CREATE INDEX messages_in_flight ON messages(submitting_since)"
     " WHERE submitting_since IS NOT NULL"),
    "CREATE INDEX messages_pbx_created ON messages(pbx, created_at)",
    ("CREATE INDEX messages_unpruned ON messages(created_at)"
     " WHERE text IS NOT NULL OR number IS NOT NULL"),
    ("CREATE INDEX messages_number_rule_sent ON messages(number, rule,"
     " COALESCE(submitted_at, created_at))"
     " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"),
    ("CREATE INDEX messages_number_sent ON messages(number,"
     " COALESCE(submitted_at, created_at), recipient_kind)"
     " WHERE (submitted_at IS NOT NULL OR state IN ('queued', 'deferred', 'ambiguous'))"),
    # A query uses it only when its WHERE has this term as written (SQLite's rule for
    # partial indexes): agent.store.smslog.RARE_STATES.
    ("CREATE INDEX messages_rare_state ON messages(state, created_at)"
     " WHERE state NOT IN ('delivered', 'suppressed')"),
)

# messages as schema 25 made it (migration 26 makes it again, its id a BLOB).
_MESSAGES_V25 = """CREATE TABLE messages_v25 (
            id                  TEXT NOT NULL UNIQUE,
            idem                INTEGER UNIQUE,
            call_id             TEXT NOT NULL,
            rule                TEXT NOT NULL,
            trigger             INTEGER NOT NULL,
            recipient_kind      INTEGER NOT NULL,
            number              TEXT,
            template            TEXT NOT NULL,
            gateway             TEXT NOT NULL,
            sender_id           TEXT NOT NULL,
            text                TEXT,
            encoding            INTEGER NOT NULL,
            segments            INTEGER NOT NULL,
            category            INTEGER NOT NULL,
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
        )"""

# Times are TEXT in one fixed-width UTC form ("2024-05-01T09:00:00.000000Z"), so string order is
# time order, indexes work, and sqlite's date functions still read them (reports use them).
# Append new migrations; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # 21: a one-part message's detail that its receipt gave ("smsc receipt delivered for
    # S0a1..."), most of a year's rows, is said by the row itself (its gateway, state and only
    # segment id: rows.receipt_detail) and stored as '' (~37 bytes a message); the history
    # keeps the words. Only where the row says the very same words: any other is kept whole.
    (
        "UPDATE messages SET detail = '' WHERE reason = 'receipt'"
        " AND json_array_length(smsc_ids) = 1 AND detail = gateway || ' receipt ' ||"
        " CASE state WHEN 'delivered' THEN 'delivered' WHEN 'expired' THEN 'expired'"
        " WHEN 'undelivered' THEN 'undelivered' WHEN 'failed' THEN 'rejected' END"
        " || ' for ' || json_extract(smsc_ids, '$[0]')",
    ),
    # 22: a receipt's state is a small code (0 delivered, 1 undelivered, 2 expired, 3 rejected,
    # 4 accepted, 5 unknown: 0 and 1 take no bytes where the word took up to 11), and its done
    # date is kept as how long before it was received (done_off = received_at - done_at, NULL
    # when it had none): the done date is usually the moment it is received, 0, no bytes where
    # the microseconds took 6 (~16 bytes a message). Rebuilt keeping each id; a state outside
    # the list fails the upgrade (NOT NULL) rather than being guessed.
    (
        """CREATE TABLE receipts_v22 (
            id          INTEGER PRIMARY KEY,
            msg         INTEGER,
            smsc_id     TEXT,
            gateway     TEXT NOT NULL,
            state       INTEGER NOT NULL,
            error_code  TEXT,
            done_off    INTEGER,
            received_at INTEGER NOT NULL,
            raw         TEXT
        )""",
        """INSERT INTO receipts_v22 (id, msg, smsc_id, gateway, state, error_code, done_off,
                received_at, raw)
            SELECT id, msg, smsc_id, gateway,
                CASE state WHEN 'delivered' THEN 0 WHEN 'undelivered' THEN 1
                    WHEN 'expired' THEN 2 WHEN 'rejected' THEN 3 WHEN 'accepted' THEN 4
                    WHEN 'unknown' THEN 5 END,
                error_code, received_at - done_at, received_at, raw
            FROM receipts""",
        "DROP TABLE receipts",
        "ALTER TABLE receipts_v22 RENAME TO receipts",
        "CREATE INDEX receipts_message ON receipts(msg) WHERE msg IS NOT NULL",
        "CREATE INDEX receipts_smsc ON receipts(gateway, smsc_id) WHERE msg IS NULL",
        "CREATE INDEX receipts_unmatched ON receipts(received_at) WHERE msg IS NULL",
    ),
    # 23: a message's history is one row, its events packed in a blob (agent.store.histpack):
    # each event's time from the message's created_at, its state, and its reason and detail
    # as the template they follow or as they are. A rowid table keyed by the message's ref,
    # with no index: 106 bytes a message in 2.8 rows became 29 in one. Every row converted.
    (
        """CREATE TABLE message_history_v23 (
            msg INTEGER PRIMARY KEY,
            log BLOB NOT NULL
        )""",
        """INSERT INTO message_history_v23 (msg, log)
            SELECT h.msg, aftercall_pack_history(json_array(m.created_at,
                       json_group_array(json_array(h.seq, h.at, h.state, h.reason, h.detail))))
            FROM message_history h LEFT JOIN messages m ON m.ref = h.msg
            GROUP BY h.msg""",
        "DROP TABLE message_history",
        "ALTER TABLE message_history_v23 RENAME TO message_history",
    ),
    # 24: a tracked link names its message by ref (as history and receipts do since schemas 13
    # and 14) in ``msg``, where the 32-character id took 33 bytes in the row and again in
    # links_message, and its created_at is integer microseconds (8 bytes where the text took
    # 27; exact as in migration 19). NULL: not (yet) attributed, as message_id was; a link
    # naming no message (none is left by the agent: retention deletes a message's links with
    # it) is kept unattributed. The report triggers that read links find the message by ref
    # (rollups.BY_REF: the same groups and counts); schema 19's are made again so.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        """CREATE TABLE links_v24 (
            code       TEXT PRIMARY KEY,
            msg        INTEGER,
            url        TEXT NOT NULL,
            created_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        f"""INSERT INTO links_v24 (code, msg, url, created_at)
            SELECT l.code, m.ref, l.url, {micros_sql_v16('l.created_at')}
            FROM links l LEFT JOIN messages m ON m.id = l.message_id""",
        "DROP TABLE links",
        "ALTER TABLE links_v24 RENAME TO links",
        "CREATE INDEX links_message ON links(msg) WHERE msg IS NOT NULL",
        *triggers(MICROS, BY_REF),
    ),
    # 25: a message's labels that every row repeats and no query filters on (trigger,
    # recipient kind, encoding, category) are small integers (packing.MESSAGE_LABELS): the
    # usual words take no bytes where they took 5-14 (~45 bytes a message), in the row and in
    # messages_number_sent. A word without a code is kept as it was. Rebuilt as in migration 19,
    # its report triggers made again as migration 24 made them.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        _MESSAGES_V25,
        (f"INSERT INTO messages_v25 ({_V15_COLUMNS}, idem, ref)"
         f" SELECT {_V25_FROM_V19}, idem, ref FROM messages"),
        "DROP TABLE messages",
        "ALTER TABLE messages_v25 RENAME TO messages",
        *_MESSAGE_INDEXES_V15,
        *triggers(MICROS, BY_REF),
    ),
    # 26: a message id the agent made (32 lowercase hex digits) is stored as its 16 bytes, in
    # the row, its unique index and a reply's message_id (packing.id_key; ~32 bytes a
    # message). Any other id stays text. Rebuilt as in migration 25 (so the rows are packed
    # again, not shrunk in place), its report triggers made again.
    (
        *(f"DROP TRIGGER {t}" for t in _TRIGGERS_ON_MESSAGES),
        _MESSAGES_V25.replace("messages_v25", "messages_v26").replace(
            "id                  TEXT NOT NULL UNIQUE", "id                  BLOB NOT NULL UNIQUE"),
        (f"INSERT INTO messages_v26 ({_V15_COLUMNS}, idem, ref)"
         f" SELECT aftercall_id_bytes(id), {_V15_COLUMNS.removeprefix('id, ')}, idem, ref"
         " FROM messages"),
        "DROP TABLE messages",
        "ALTER TABLE messages_v26 RENAME TO messages",
        *_MESSAGE_INDEXES_V15,
        ("UPDATE replies SET message_id = aftercall_id_bytes(message_id)"
         " WHERE message_id IS NOT NULL"),
        *triggers(MICROS, BY_REF),
    ),
)

LATEST_VERSION = len(MIGRATIONS)
