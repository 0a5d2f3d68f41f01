"""PostgreSQL's report rollups (schema version 6): per day and PBX, kept without hot rows.

The SQLite store's triggers add each change straight into its rollup rows (agent.store.rollups):
one writer, no contention. Several agents writing one PostgreSQL would all update the same few
rollup rows (today's, per rule and state) on every message, each holding that row's lock until
its commit: every agent's writes would queue behind one another, and two transactions touching
two groups in opposite orders would deadlock. So here a trigger only *appends* a message's
contribution to ``report_changes`` (no lock on anything shared), and ``fold`` (one agent at a
time, under an advisory lock, every few seconds) moves the changes into the keyed rollups in
one transaction. Readers read the ``*_all`` views: the rollups plus the changes not yet folded,
in one statement (one snapshot), so a report never counts a change twice or misses one.

The figures are SQLite's: per UTC day, rule, gateway, state, reason and error code (with sent,
segments, linked, clicked, clicks), log-spaced histograms of hangup->submit (ms) and
submit->delivery (s) (``rollups.BUCKETS_PER_E``), messages per quarter hour and state (days in
the operator's zone), and replies per label; here also per PBX, so one PBX's report is read
from the rollups too. Nothing subtracts on DELETE.
"""

from __future__ import annotations

from agent.store.rollups import BUCKETS_PER_E

#: Folds run this often in a running agent; a report between two folds reads the changes too.
FOLD_EVERY_S = 5.0
_FOLD_LOCK = 0x61667465726F6C6C  # "afteroll": one folder at a time, across agents


def bucket(x: str) -> str:
    """The histogram bucket of a value, as agent.store.rollups.bucket_sql in SQLite."""
    return f"round(ln(greatest({x}, 0.0001)) * {BUCKETS_PER_E})::integer"


def day(t: str) -> str:
    return f"({t} AT TIME ZONE 'UTC')::date"


def slot(t: str) -> str:
    """The UTC quarter hour a time falls in (a timestamptz)."""
    return (f"(date_trunc('hour', {t}) + floor(extract(minute FROM {t}) / 15)"
            " * interval '15 minutes')")


_COUNTED = ("created_at", "rule", "gateway", "state", "reason", "error_code", "submitted_at",
            "segments", "hangup_to_submit_ms", "final_at", "pbx")

def _values(m: str, sign: int, linked: str = "v_linked", clicks: str = "v_clicks") -> str:
    """The change row of message ``m`` counted with ``sign``; ``linked`` (0 or 1) and
    ``clicks``: its links' figures (the trigger's variables, or a lateral's columns)."""
    return (f"{m}.created_at, {m}.pbx, {m}.rule, {m}.gateway, {m}.state,"
            f" coalesce({m}.reason, ''), coalesce({m}.error_code, ''), {sign},"
            f" {sign} * ({m}.submitted_at IS NOT NULL)::integer,"
            f" {sign} * CASE WHEN {m}.submitted_at IS NOT NULL THEN {m}.segments ELSE 0 END,"
            f" {sign} * {linked}, {sign} * ({clicks} > 0)::integer, {sign} * {clicks},"
            f" CASE WHEN {m}.submitted_at IS NOT NULL THEN {m}.hangup_to_submit_ms END,"
            f" CASE WHEN {m}.state = 'delivered' AND {m}.final_at IS NOT NULL"
            f" AND {m}.submitted_at IS NOT NULL THEN"
            f" extract(epoch FROM {m}.final_at - {m}.submitted_at)::double precision END")


_CHANGE_COLUMNS = ("created_at, pbx, rule, gateway, state, reason, error_code, n, sent, segments,"
                   " linked, clicked, clicks, h2s, delivery")

MIGRATION: tuple[str, ...] = (
    # One row per change of a counted message: +1 for what it is now, -1 for what it was.
    # No key and no index: appending is all writers do, and a fold takes every row it sees.
    """CREATE TABLE report_changes (
        created_at timestamptz NOT NULL, pbx text NOT NULL,
        rule text NOT NULL, gateway text NOT NULL, state text NOT NULL, reason text NOT NULL,
        error_code text NOT NULL, n integer NOT NULL, sent integer NOT NULL,
        segments integer NOT NULL, linked integer NOT NULL, clicked integer NOT NULL,
        clicks integer NOT NULL, h2s double precision, delivery double precision)""",
    """CREATE TABLE report_reply_changes (
        created_at timestamptz NOT NULL, pbx text NOT NULL,
        rule text NOT NULL, gateway text NOT NULL, label text NOT NULL, n integer NOT NULL,
        rating_sum integer NOT NULL, ratings integer NOT NULL, opt_outs integer NOT NULL)""",
    """CREATE TABLE report_daily (
        day date NOT NULL, pbx text NOT NULL, rule text NOT NULL, gateway text NOT NULL,
        state text NOT NULL, reason text NOT NULL, error_code text NOT NULL,
        n bigint NOT NULL, sent bigint NOT NULL, segments bigint NOT NULL,
        linked bigint NOT NULL, clicked bigint NOT NULL, clicks bigint NOT NULL,
        PRIMARY KEY (day, pbx, rule, gateway, state, reason, error_code))""",
    """CREATE TABLE report_hist (
        day date NOT NULL, pbx text NOT NULL, rule text NOT NULL, gateway text NOT NULL,
        metric text NOT NULL, bucket integer NOT NULL, n bigint NOT NULL,
        total double precision NOT NULL,
        PRIMARY KEY (day, pbx, rule, gateway, metric, bucket))""",
    """CREATE TABLE report_slots (
        slot timestamptz NOT NULL, pbx text NOT NULL, state text NOT NULL, n bigint NOT NULL,
        sent bigint NOT NULL, PRIMARY KEY (slot, pbx, state))""",
    """CREATE TABLE report_replies (
        day date NOT NULL, pbx text NOT NULL, rule text NOT NULL, gateway text NOT NULL,
        label text NOT NULL, n bigint NOT NULL, rating_sum bigint NOT NULL,
        ratings bigint NOT NULL, opt_outs bigint NOT NULL,
        PRIMARY KEY (day, pbx, rule, gateway, label))""",
    # A message counts +1 as it is now and, after a change, -1 as it was: one statement.
    f"""CREATE FUNCTION report_message_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        v_linked integer := 0;
        v_clicks integer := 0;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            -- A new message has no links yet: they are written after it, and counted then.
            INSERT INTO report_changes ({_CHANGE_COLUMNS}) VALUES ({_values("NEW", 1)});
            RETURN NULL;
        END IF;
        SELECT least(count(*), 1), coalesce(sum(n), 0) INTO v_linked, v_clicks FROM (
            SELECT (SELECT count(*) FROM clicks c WHERE c.code = l.code) AS n
            FROM links l WHERE l.message_id = NEW.id) t;
        INSERT INTO report_changes ({_CHANGE_COLUMNS})
        VALUES ({_values("OLD", -1)}), ({_values("NEW", 1)});
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER report_message_inserted AFTER INSERT ON messages
        FOR EACH ROW EXECUTE FUNCTION report_message_changed()""",
    # Claims, attempts and texts change no figure: no change row for them.
    f"""CREATE TRIGGER report_message_updated AFTER UPDATE ON messages FOR EACH ROW
        WHEN ({" OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in _COUNTED)})
        EXECUTE FUNCTION report_message_changed()""",
    # A link or click reaching a message counts in that message's group as it is now.
    f"""CREATE FUNCTION report_link_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO report_changes ({_CHANGE_COLUMNS})
        SELECT m.created_at, m.pbx, m.rule, m.gateway, m.state, coalesce(m.reason, ''),
               coalesce(m.error_code, ''), 0, 0, 0,
               (NOT EXISTS (SELECT 1 FROM links WHERE message_id = m.id
                            AND code <> NEW.code))::integer,
               (own.n > 0 AND NOT EXISTS (SELECT 1 FROM clicks c JOIN links l
                    ON l.code = c.code WHERE l.message_id = m.id
                    AND l.code <> NEW.code))::integer,
               own.n, NULL, NULL
        FROM messages m, (SELECT count(*)::integer AS n FROM clicks
                          WHERE code = NEW.code) own
        WHERE m.id = NEW.message_id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER report_link_added AFTER INSERT ON links FOR EACH ROW
        WHEN (NEW.message_id IS NOT NULL) EXECUTE FUNCTION report_link_added()""",
    """CREATE TRIGGER report_link_attributed AFTER UPDATE OF message_id ON links FOR EACH ROW
        WHEN (NEW.message_id IS NOT NULL AND OLD.message_id IS NULL)
        EXECUTE FUNCTION report_link_added()""",
    f"""CREATE FUNCTION report_click_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO report_changes ({_CHANGE_COLUMNS})
        SELECT m.created_at, m.pbx, m.rule, m.gateway, m.state, coalesce(m.reason, ''),
               coalesce(m.error_code, ''), 0, 0, 0, 0,
               ((SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code
                 WHERE l.message_id = m.id) = 1)::integer, 1, NULL, NULL
        FROM links l JOIN messages m ON m.id = l.message_id WHERE l.code = NEW.code;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER report_click_added AFTER INSERT ON clicks FOR EACH ROW
        EXECUTE FUNCTION report_click_added()""",
    """CREATE FUNCTION report_reply_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO report_reply_changes (created_at, pbx, rule, gateway, label, n, rating_sum,
                                          ratings, opt_outs)
        SELECT m.created_at, m.pbx, m.rule, m.gateway,
               CASE WHEN NEW.keyword IS NOT NULL THEN 'keyword' WHEN NEW.sentiment IS NULL
               THEN 'unrated' WHEN NEW.sentiment >= 0.05 THEN 'positive'
               WHEN NEW.sentiment <= -0.05 THEN 'negative' ELSE 'neutral' END,
               1, coalesce(NEW.rating, 0), (NEW.rating IS NOT NULL)::integer,
               (coalesce(NEW.action = 'opt_out', false) AND NOT EXISTS (SELECT 1 FROM replies
                   WHERE message_id = NEW.message_id AND action = 'opt_out'
                   AND id <> NEW.id))::integer
        FROM messages m WHERE m.id = NEW.message_id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER report_reply_added AFTER INSERT ON replies FOR EACH ROW
        WHEN (NEW.message_id IS NOT NULL) EXECUTE FUNCTION report_reply_added()""",
    # What readers read: the folded rollups and the changes not yet folded, in one snapshot.
    f"""CREATE VIEW report_daily_all AS
        SELECT day, pbx, rule, gateway, state, reason, error_code, n, sent, segments, linked,
               clicked, clicks FROM report_daily
        UNION ALL
        SELECT {day("created_at")}, pbx, rule, gateway, state, reason, error_code, n, sent,
               segments, linked, clicked, clicks FROM report_changes""",
    f"""CREATE VIEW report_hist_all AS
        SELECT day, pbx, rule, gateway, metric, bucket, n, total FROM report_hist
        UNION ALL
        SELECT {day("created_at")}, pbx, rule, gateway, 'h2s', {bucket("h2s")}, n, n * h2s
        FROM report_changes WHERE h2s IS NOT NULL AND n <> 0
        UNION ALL
        SELECT {day("created_at")}, pbx, rule, gateway, 'delivery', {bucket("delivery")}, n,
               n * delivery
        FROM report_changes WHERE delivery IS NOT NULL AND n <> 0""",
    f"""CREATE VIEW report_slots_all AS
        SELECT slot, pbx, state, n, sent FROM report_slots
        UNION ALL
        SELECT {slot("created_at")}, pbx, state, n, sent FROM report_changes WHERE n <> 0""",
    f"""CREATE VIEW report_replies_all AS
        SELECT day, pbx, rule, gateway, label, n, rating_sum, ratings, opt_outs
        FROM report_replies
        UNION ALL
        SELECT {day("created_at")}, pbx, rule, gateway, label, n, rating_sum, ratings, opt_outs
        FROM report_reply_changes""",
    # The rows already there count once (a one-off read on upgrade; the next fold groups them).
    f"""INSERT INTO report_changes ({_CHANGE_COLUMNS})
        SELECT {_values("m", 1, "k.linked", "k.clicks")} FROM messages m,
            LATERAL (SELECT least(count(*), 1) AS linked, coalesce(sum(n), 0) AS clicks FROM (
                SELECT (SELECT count(*) FROM clicks c WHERE c.code = l.code) AS n
                FROM links l WHERE l.message_id = m.id) t) k""",
    """INSERT INTO report_reply_changes (created_at, pbx, rule, gateway, label, n, rating_sum,
                                        ratings, opt_outs)
        SELECT m.created_at, m.pbx, m.rule, m.gateway,
               CASE WHEN p.keyword IS NOT NULL THEN 'keyword' WHEN p.sentiment IS NULL
               THEN 'unrated' WHEN p.sentiment >= 0.05 THEN 'positive'
               WHEN p.sentiment <= -0.05 THEN 'negative' ELSE 'neutral' END,
               1, coalesce(p.rating, 0), (p.rating IS NOT NULL)::integer,
               (p.action = 'opt_out' AND NOT EXISTS (SELECT 1 FROM replies q
                   WHERE q.message_id = p.message_id AND q.action = 'opt_out'
                   AND q.id < p.id))::integer
        FROM replies p JOIN messages m ON m.id = p.message_id""",
)

#: One transaction: the changes visible now leave ``report_changes`` and land in the rollups
#: (a change committed meanwhile stays for the next fold). Returns how many moved.
FOLD: tuple[str, ...] = (
    f"""WITH moved AS (DELETE FROM report_changes RETURNING *),
        daily AS (
            INSERT INTO report_daily AS r
            SELECT {day("created_at")}, pbx, rule, gateway, state, reason, error_code, sum(n),
                   sum(sent), sum(segments), sum(linked), sum(clicked), sum(clicks)
            FROM moved GROUP BY 1, 2, 3, 4, 5, 6, 7
            ON CONFLICT (day, pbx, rule, gateway, state, reason, error_code) DO UPDATE SET
                n = r.n + excluded.n, sent = r.sent + excluded.sent,
                segments = r.segments + excluded.segments, linked = r.linked + excluded.linked,
                clicked = r.clicked + excluded.clicked, clicks = r.clicks + excluded.clicks),
        hist AS (
            INSERT INTO report_hist AS r
            SELECT d, pbx, rule, gateway, metric, b, sum(n), sum(total) FROM (
                SELECT {day("created_at")} AS d, pbx, rule, gateway, 'h2s' AS metric,
                       {bucket("h2s")} AS b, n, n * h2s AS total
                FROM moved WHERE h2s IS NOT NULL AND n <> 0
                UNION ALL
                SELECT {day("created_at")}, pbx, rule, gateway, 'delivery',
                       {bucket("delivery")}, n, n * delivery
                FROM moved WHERE delivery IS NOT NULL AND n <> 0) h
            GROUP BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (day, pbx, rule, gateway, metric, bucket) DO UPDATE SET
                n = r.n + excluded.n, total = r.total + excluded.total),
        slots AS (
            INSERT INTO report_slots AS r
            SELECT {slot("created_at")}, pbx, state, sum(n), sum(sent) FROM moved
            WHERE n <> 0 GROUP BY 1, 2, 3
            ON CONFLICT (slot, pbx, state) DO UPDATE SET n = r.n + excluded.n,
                sent = r.sent + excluded.sent)
        SELECT count(*) FROM moved""",
    f"""WITH moved AS (DELETE FROM report_reply_changes RETURNING *),
        ins AS (
            INSERT INTO report_replies AS r
            SELECT {day("created_at")}, pbx, rule, gateway, label, sum(n), sum(rating_sum),
                   sum(ratings), sum(opt_outs) FROM moved GROUP BY 1, 2, 3, 4, 5
            ON CONFLICT (day, pbx, rule, gateway, label) DO UPDATE SET n = r.n + excluded.n,
                rating_sum = r.rating_sum + excluded.rating_sum,
                ratings = r.ratings + excluded.ratings, opt_outs = r.opt_outs + excluded.opt_outs)
        SELECT count(*) FROM moved""",
)
FOLD_LOCK_SQL = f"SELECT pg_try_advisory_xact_lock({_FOLD_LOCK})"
