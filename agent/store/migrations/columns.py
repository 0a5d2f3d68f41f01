"""What several SQLite migrations (13-26) build ``messages`` from: the report triggers they
drop, its columns and its indexes as the schemas they copy had them (released: never edited)."""

from __future__ import annotations

# Schema 5's report triggers that read ``messages`` (migration 13 makes them again).
_TRIGGERS_ON_MESSAGES = ("report_message_inserted", "report_message_changed",
                         "report_link_added", "report_link_attributed", "report_click_added",
                         "report_reply_added")
# The columns schemas 13 and 14 and schema 15 share (migration 15 copies them).
_V15_COLUMNS = (
    "id, call_id, rule, trigger, recipient_kind, number, template, gateway, sender_id, text,"
    " encoding, segments, category, dlt_template_id, dlt_entity_id, state, reason, detail,"
    " attempts, smsc_ids, error_code, created_at, queued_at, submitted_at, final_at,"
    " next_attempt_at, submitting_since, expires_at, call_ended_at, hangup_to_submit_ms, pbx")

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
