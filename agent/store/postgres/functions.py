"""Server-side functions for the submit and receipt paths: each is one round trip, not a
transaction of several (schema migrations 7 and 8).

Both take a transaction-scoped advisory lock on a gateway's message id and must then look at
the rows other agents committed while they waited for it; one SQL statement cannot (its
snapshot is taken before the wait), but each statement in a PL/pgSQL function takes a fresh
snapshot. The lock lasts until the calling statement's own transaction ends, so the function
does under it everything that the lock protects."""

from __future__ import annotations

MIGRATION: tuple[str, ...] = (
    # A submit's record (see MessageOps.record_submit): the lock on its ids, the row, its event
    # and its ids; then whether receipts for those ids were stored before (the caller applies
    # them: rare, it takes a transaction of its own).
    """CREATE FUNCTION aftercall_record_submit(
        p_id text, p_gateway text, p_ids text[], p_at timestamptz,
        p_h2s double precision, p_detail text)
    RETURNS TABLE (m messages, receipts_waiting boolean) LANGUAGE plpgsql AS $$
    DECLARE
        v messages;
    BEGIN
        -- In a fixed order, so two multi-part submits cannot deadlock.
        PERFORM pg_advisory_xact_lock(hashtext(k)) FROM
            (SELECT DISTINCT p_gateway || '|' || i AS k FROM unnest(p_ids) AS i ORDER BY 1) s;
        UPDATE messages SET state = CASE WHEN state IN ('queued', 'ambiguous')
            THEN 'submitted' ELSE state END, reason = NULL, detail = NULL,
            gateway = p_gateway, smsc_ids = p_ids, submitted_at = p_at,
            submitting_since = NULL, next_attempt_at = NULL, error_code = NULL,
            hangup_to_submit_ms = p_h2s, updated_at = p_at
        WHERE id = p_id RETURNING * INTO v;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        INSERT INTO message_events (message_id, at, state, reason, detail)
        VALUES (p_id, p_at, 'submitted', NULL, p_detail);
        INSERT INTO message_smsc_ids (gateway, smsc_id, message_id)
        SELECT p_gateway, i, p_id FROM unnest(p_ids) AS i ON CONFLICT DO NOTHING;
        RETURN QUERY SELECT v, EXISTS(SELECT 1 FROM receipts WHERE message_id IS NULL
            AND gateway = p_gateway AND smsc_id = ANY(p_ids));
    END $$""",
    # A receipt (see ReceiptOps.apply_receipt): stored, matched and applied at once. A receipt
    # for one part of a multi-part message changes nothing here ('parts'): the caller decides
    # it from every part's receipts, in a transaction. ``p_target``: the state a final receipt
    # moves its message to (agent.store.segments.RECEIPT_TARGET), NULL for an intermediate one.
    """CREATE FUNCTION aftercall_apply_receipt(
        p_gateway text, p_smsc_id text, p_message_id text, p_state text, p_target text,
        p_error text, p_done timestamptz, p_at timestamptz, p_raw text, p_dedupe text,
        p_max_per_message integer, p_max_unmatched integer)
    RETURNS TABLE (m messages, receipt_id bigint, outcome text) LANGUAGE plpgsql AS $$
    DECLARE
        v messages;
        v_receipt bigint;
        v_detail text;
    BEGIN
        IF p_smsc_id IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext(p_gateway || '|' || p_smsc_id));
        END IF;
        IF p_message_id IS NOT NULL THEN
            SELECT * INTO v FROM messages WHERE id = p_message_id FOR UPDATE;
        END IF;
        IF v.id IS NULL AND p_smsc_id IS NOT NULL THEN
            SELECT x.* INTO v FROM message_smsc_ids s JOIN messages x ON x.id = s.message_id
            WHERE s.gateway = p_gateway AND s.smsc_id = p_smsc_id
            ORDER BY x.created_at DESC LIMIT 1 FOR UPDATE OF x;
        END IF;
        IF v.id IS NOT NULL AND cardinality(v.smsc_ids) > 1
                AND p_smsc_id = ANY(v.smsc_ids) THEN
            RETURN QUERY SELECT v, NULL::bigint, 'parts'::text;
            RETURN;
        END IF;
        IF v.id IS NOT NULL AND (SELECT count(*) FROM receipts
                                 WHERE message_id = v.id) >= p_max_per_message THEN
            RETURN QUERY SELECT v, NULL::bigint, 'full'::text;
            RETURN;
        END IF;
        INSERT INTO receipts (message_id, smsc_id, gateway, state, error_code, done_at,
                              received_at, raw, dedupe_key)
        VALUES (v.id, p_smsc_id, p_gateway, p_state, p_error, p_done, p_at, p_raw, p_dedupe)
        ON CONFLICT (dedupe_key) DO NOTHING RETURNING id INTO v_receipt;
        IF v_receipt IS NULL THEN
            RETURN QUERY SELECT v, NULL::bigint, 'duplicate'::text;
            RETURN;
        END IF;
        IF v.id IS NULL THEN
            IF v_receipt % 64 = 0 THEN
                DELETE FROM receipts WHERE message_id IS NULL AND gateway = p_gateway AND id <
                    (SELECT id FROM receipts WHERE message_id IS NULL AND gateway = p_gateway
                     ORDER BY id DESC LIMIT 1 OFFSET p_max_unmatched - 1);
            END IF;
            RETURN QUERY SELECT v, v_receipt, 'unmatched'::text;
            RETURN;
        END IF;
        -- Intermediate receipts are kept and move nothing; a final state is never replaced;
        -- an HTTP callback carrying our id may beat the gateway's response (queued, claimed).
        IF p_target IS NULL OR NOT (v.state IN ('submitted', 'ambiguous')
                OR (v.state = 'queued' AND v.submitting_since IS NOT NULL)) THEN
            RETURN QUERY SELECT v, v_receipt, 'kept'::text;
            RETURN;
        END IF;
        v_detail := p_gateway || ' receipt ' || p_state || ' for ' || coalesce(p_smsc_id, v.id);
        UPDATE messages SET state = p_target, reason = 'receipt', detail = v_detail,
            error_code = COALESCE(p_error, error_code), final_at = p_at, updated_at = p_at
        WHERE id = v.id RETURNING * INTO v;
        INSERT INTO message_events (message_id, at, state, reason, detail)
        VALUES (v.id, p_at, p_target, 'receipt', v_detail);
        RETURN QUERY SELECT v, v_receipt, 'changed'::text;
    END $$""",
)

# 8: a submit's record applies the receipts that came before it (a receipt often reaches an
# agent before the submit's response has been recorded), unless the message has several parts
# (those the caller decides from every part's receipts, in a transaction). The receipt states
# and the message states they lead to are agent.store.segments.RECEIPT_TARGET's.
MIGRATION_8: tuple[str, ...] = (
    """CREATE OR REPLACE FUNCTION aftercall_record_submit(
        p_id text, p_gateway text, p_ids text[], p_at timestamptz,
        p_h2s double precision, p_detail text)
    RETURNS TABLE (m messages, receipts_waiting boolean) LANGUAGE plpgsql AS $$
    DECLARE
        v messages;
        rc record;
        v_target text;
        v_detail text;
    BEGIN
        -- In a fixed order, so two multi-part submits cannot deadlock.
        PERFORM pg_advisory_xact_lock(hashtext(k)) FROM
            (SELECT DISTINCT p_gateway || '|' || i AS k FROM unnest(p_ids) AS i ORDER BY 1) s;
        UPDATE messages SET state = CASE WHEN state IN ('queued', 'ambiguous')
            THEN 'submitted' ELSE state END, reason = NULL, detail = NULL,
            gateway = p_gateway, smsc_ids = p_ids, submitted_at = p_at,
            submitting_since = NULL, next_attempt_at = NULL, error_code = NULL,
            hangup_to_submit_ms = p_h2s, updated_at = p_at
        WHERE id = p_id RETURNING * INTO v;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        INSERT INTO message_events (message_id, at, state, reason, detail)
        VALUES (p_id, p_at, 'submitted', NULL, p_detail);
        INSERT INTO message_smsc_ids (gateway, smsc_id, message_id)
        SELECT p_gateway, i, p_id FROM unnest(p_ids) AS i ON CONFLICT DO NOTHING;
        IF cardinality(p_ids) > 1 THEN
            RETURN QUERY SELECT v, EXISTS(SELECT 1 FROM receipts WHERE message_id IS NULL
                AND gateway = p_gateway AND smsc_id = ANY(p_ids));
            RETURN;
        END IF;
        FOR rc IN WITH u AS (UPDATE receipts SET message_id = p_id WHERE message_id IS NULL
                AND gateway = p_gateway AND smsc_id = ANY(p_ids)
                RETURNING id, state, smsc_id, error_code) SELECT * FROM u ORDER BY id LOOP
            v_target := CASE rc.state WHEN 'delivered' THEN 'delivered'
                WHEN 'expired' THEN 'expired' WHEN 'undelivered' THEN 'undelivered'
                WHEN 'rejected' THEN 'failed' END;
            -- As a receipt after the submit: a final state is never replaced.
            IF v_target IS NOT NULL AND v.state IN ('submitted', 'ambiguous') THEN
                v_detail := p_gateway || ' receipt ' || rc.state || ' for '
                    || coalesce(rc.smsc_id, v.id);
                UPDATE messages SET state = v_target, reason = 'receipt', detail = v_detail,
                    error_code = COALESCE(rc.error_code, error_code), final_at = p_at,
                    updated_at = p_at
                WHERE id = p_id RETURNING * INTO v;
                INSERT INTO message_events (message_id, at, state, reason, detail)
                VALUES (p_id, p_at, v_target, 'receipt', v_detail);
            END IF;
        END LOOP;
        RETURN QUERY SELECT v, false;
    END $$""",
)
