"""SQLite migrations 21-27: what a row can say in fewer bytes (a receipt's detail and state,
the history in one blob, links by ref, a message's labels as codes, an id the agent made as
its 16 bytes), and an index no read needs any more (calls by the time they were stored)."""

from __future__ import annotations

from agent.store.frozen import micros_sql_v16
from agent.store.migrations.columns import (
    _MESSAGE_INDEXES_V15,
    _TRIGGERS_ON_MESSAGES,
    _V15_COLUMNS,
)
from agent.store.rollups import BY_REF, MICROS, triggers

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

MIGRATIONS_21_27: tuple[tuple[str, ...], ...] = (
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
    # 27: retention ages a call by when it ended (calls_ended_at; one never ended by when it
    # was stored, found as the ended_at IS NULL part of that index), so the index of when each
    # call was stored, kept for retention alone, goes (~15 bytes a message, one index fewer
    # to write per call).
    ("DROP INDEX calls_created",),
)
