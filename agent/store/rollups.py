"""Schema version 5: daily report rollups kept by triggers, and the indexes a year of data needs.

Reports over a year must not read a year of rows. Every message counts once in ``report_daily``
under its UTC creation day, rule, gateway, state, reason and error code (with whether it was
sent, its segments, whether it carries a tracked link, was clicked, and its clicks), and its
latencies count in ``report_hist``: log-spaced buckets of hangup->submit (ms) and
submit->delivery (s), each with the count and the sum of its values. ``report_replies`` counts
replies by the replied-to message's day, rule and gateway; ``report_slots`` counts messages
per quarter hour and state, for the per-day chart in the operator's time zone. Triggers keep all three current on
every insert and state change, in the writer's own transaction, so they can never disagree
with the rows. Nothing subtracts on DELETE: retention removes rows, the aggregates stay.

Percentiles come from the histograms: the bucket holding the nearest-rank value, reported as
the mean of that bucket's values, so within one bucket width (about 5%) of the exact value, and
exact when the bucket's values are equal.

Released: never edit this file's SQL; add a new schema version instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

BUCKETS_PER_E = 20  # buckets per factor of e: each bucket spans about 5% of its value


def bucket_sql(x: str) -> str:
    """The bucket number of a positive value (0 and below share the lowest bucket)."""
    return f"CAST(round(ln(max({x}, 0.0001)) * {BUCKETS_PER_E}) AS INTEGER)"


# Seconds from submit to final, exact to the microsecond on the fixed-width UTC text times.
def delivery_seconds_sql(a: str) -> str:
    return (f"((strftime('%s', {a}.final_at) - strftime('%s', {a}.submitted_at))"
            f" + (substr({a}.final_at, 21, 6) - substr({a}.submitted_at, 21, 6)) / 1e6)")


# The same on integer microseconds (SQLite's schema 19): whole seconds, then the fractions, as
# the text form's arithmetic goes, so each value is the same double (and falls in the same
# bucket) whichever form the row had when it was counted.
def delivery_seconds_micros_sql(a: str) -> str:
    return (f"((({a}.final_at / 1000000) - ({a}.submitted_at / 1000000))"
            f" + ({a}.final_at % 1000000 - {a}.submitted_at % 1000000) / 1e6)")


def day_sql(x: str) -> str:
    """The UTC day ('YYYY-MM-DD') of a fixed-width text time."""
    return f"substr({x}, 1, 10)"


def day_micros_sql(x: str) -> str:
    """The UTC day of an integer-microseconds time (schema 19)."""
    return f"strftime('%Y-%m-%d', {x} / 1000000, 'unixepoch')"


class Times(NamedTuple):
    """How the report SQL reads a message's times: the day, the quarter hour, the seconds
    from submit to final."""
    day: Callable[[str], str]
    slot: Callable[[str], str]
    delivery: Callable[[str], str]


class LinkKey(NamedTuple):
    """How a link names its message: its column, and the message's column it holds."""
    column: str
    message: str


#: Schema 5's links name a message by its id; SQLite's since schema 24 by its ref (rowid).
BY_ID = LinkKey("message_id", "id")
BY_REF = LinkKey("msg", "ref")

_KEY = "day, rule, gateway, state, reason, error_code"


def _daily(x: str, sign: int, t: Times, k: LinkKey) -> str:
    clicks = (f"(SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code"
              f" WHERE l.{k.column} = {x}.{k.message})")
    return f"""INSERT INTO report_daily ({_KEY}, n, sent, segments, linked, clicked, clicks)
        SELECT {t.day(f"{x}.created_at")}, {x}.rule, {x}.gateway, {x}.state,
               coalesce({x}.reason, ''), coalesce({x}.error_code, ''), {sign},
               {sign} * ({x}.submitted_at IS NOT NULL),
               {sign} * (CASE WHEN {x}.submitted_at IS NOT NULL THEN {x}.segments ELSE 0 END),
               {sign} * EXISTS (SELECT 1 FROM links WHERE {k.column} = {x}.{k.message}),
               {sign} * ({clicks} > 0), {sign} * {clicks}
        WHERE true
        ON CONFLICT ({_KEY}) DO UPDATE SET n = n + excluded.n, sent = sent + excluded.sent,
            segments = segments + excluded.segments, linked = linked + excluded.linked,
            clicked = clicked + excluded.clicked, clicks = clicks + excluded.clicks;"""


def _hist(x: str, sign: int, metric: str, t: Times) -> str:
    if metric == "h2s":
        value = f"{x}.hangup_to_submit_ms"
        cond = f"{x}.submitted_at IS NOT NULL AND {x}.hangup_to_submit_ms IS NOT NULL"
    else:
        value = t.delivery(x)
        cond = (f"{x}.state = 'delivered' AND {x}.final_at IS NOT NULL"
                f" AND {x}.submitted_at IS NOT NULL")
    return f"""INSERT INTO report_hist (day, rule, gateway, metric, bucket, n, total)
        SELECT {t.day(f"{x}.created_at")}, {x}.rule, {x}.gateway, '{metric}',
               {bucket_sql(value)}, {sign}, {sign} * {value}
        WHERE {cond}
        ON CONFLICT (day, rule, gateway, metric, bucket) DO UPDATE SET n = n + excluded.n,
            total = total + excluded.total;"""


def slot_sql(x: str) -> str:
    """The quarter hour (UTC, 'YYYY-MM-DDTHH:MM') a time falls in: every time zone's days are
    whole numbers of quarter hours, so days in the operator's zone are sums of slots."""
    return (f"substr({x}, 1, 14) || printf('%02d', CAST(substr({x}, 15, 2) AS INTEGER)"
            " / 15 * 15)")


def slot_micros_sql(x: str) -> str:
    """The quarter hour of an integer-microseconds time (schema 19), as ``slot_sql`` gives it."""
    return f"strftime('%Y-%m-%dT%H:%M', {x} / 1000000 / 900 * 900, 'unixepoch')"


#: Schema 5's reading of the times (fixed-width text), and schema 19's (SQLite: integers).
TEXT = Times(day_sql, slot_sql, delivery_seconds_sql)
MICROS = Times(day_micros_sql, slot_micros_sql, delivery_seconds_micros_sql)


def _slot(x: str, sign: int, t: Times) -> str:
    return f"""INSERT INTO report_slots (slot, state, n, sent)
        SELECT {t.slot(f"{x}.created_at")}, {x}.state, {sign},
               {sign} * ({x}.submitted_at IS NOT NULL)
        WHERE true
        ON CONFLICT (slot, state) DO UPDATE SET n = n + excluded.n, sent = sent + excluded.sent;"""


def _contribution(x: str, sign: int, t: Times, k: LinkKey) -> str:
    return "\n".join((_daily(x, sign, t, k), _slot(x, sign, t), _hist(x, sign, "h2s", t),
                      _hist(x, sign, "delivery", t)))


_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in (
    "created_at", "rule", "gateway", "state", "reason", "error_code", "submitted_at", "segments",
    "hangup_to_submit_ms", "final_at"))

# The group of the message a link or click belongs to.
def _group_of(mid: str, t: Times, k: LinkKey) -> str:
    return ("(day, rule, gateway, state, reason, error_code) = (SELECT"
            f" {t.day('created_at')},"
            " rule, gateway, state, coalesce(reason, ''), coalesce(error_code, '')"
            f" FROM messages WHERE {k.message} = {mid})")


def _link_added(t: Times, k: LinkKey) -> str:
    mid = f"NEW.{k.column}"
    others = f"SELECT 1 FROM links WHERE {k.column} = {mid} AND code <> NEW.code"
    own = "(SELECT count(*) FROM clicks WHERE code = NEW.code)"
    other_clicks = (f"SELECT 1 FROM clicks c JOIN links l ON l.code = c.code"
                    f" WHERE l.{k.column} = {mid} AND l.code <> NEW.code")
    return f"""UPDATE report_daily SET linked = linked + NOT EXISTS ({others}),
            clicks = clicks + {own},
            clicked = clicked + ({own} > 0 AND NOT EXISTS ({other_clicks}))
        WHERE {_group_of(mid, t, k)};"""


_REPLY_LABEL = ("CASE WHEN NEW.keyword IS NOT NULL THEN 'keyword' WHEN NEW.sentiment IS NULL"
                " THEN 'unrated' WHEN NEW.sentiment >= 0.05 THEN 'positive'"
                " WHEN NEW.sentiment <= -0.05 THEN 'negative' ELSE 'neutral' END")

def triggers(t: Times, k: LinkKey = BY_ID) -> tuple[str, ...]:
    """The triggers that keep the rollups current, reading a message's times as ``t`` says
    (schema 5 made them for text times, SQLite's schema 19 again for integers) and finding a
    link's message as ``k`` says (SQLite's schema 24: by ref)."""
    of_code = f"(SELECT {k.column} FROM links WHERE code = NEW.code)"
    return (
    f"""CREATE TRIGGER report_message_inserted AFTER INSERT ON messages BEGIN
        {_contribution("NEW", 1, t, k)}
    END""",
    f"""CREATE TRIGGER report_message_changed AFTER UPDATE ON messages WHEN {_CHANGED} BEGIN
        {_contribution("OLD", -1, t, k)}
        {_contribution("NEW", 1, t, k)}
    END""",
    f"""CREATE TRIGGER report_link_added AFTER INSERT ON links
        WHEN NEW.{k.column} IS NOT NULL BEGIN
        {_link_added(t, k)}
    END""",
    f"""CREATE TRIGGER report_link_attributed AFTER UPDATE OF {k.column} ON links
        WHEN NEW.{k.column} IS NOT NULL AND OLD.{k.column} IS NULL BEGIN
        {_link_added(t, k)}
    END""",
    f"""CREATE TRIGGER report_click_added AFTER INSERT ON clicks BEGIN
        UPDATE report_daily SET clicks = clicks + 1,
            clicked = clicked + ((SELECT count(*) FROM clicks c JOIN links l ON l.code = c.code
                WHERE l.{k.column} = {of_code}) = 1)
        WHERE {_group_of(of_code, t, k)};
    END""",
    f"""CREATE TRIGGER report_reply_added AFTER INSERT ON replies
        WHEN NEW.message_id IS NOT NULL BEGIN
        INSERT INTO report_replies (day, rule, gateway, label, n, rating_sum, ratings, opt_outs)
        SELECT {t.day('m.created_at')}, m.rule, m.gateway, {_REPLY_LABEL}, 1,
               coalesce(NEW.rating, 0), NEW.rating IS NOT NULL,
               coalesce(NEW.action = 'opt_out', 0) AND NOT EXISTS (SELECT 1 FROM replies
                   WHERE message_id = NEW.message_id AND action = 'opt_out' AND id <> NEW.id)
        FROM messages m WHERE m.id = NEW.message_id
        ON CONFLICT (day, rule, gateway, label) DO UPDATE SET n = n + excluded.n,
            rating_sum = rating_sum + excluded.rating_sum, ratings = ratings + excluded.ratings,
            opt_outs = opt_outs + excluded.opt_outs;
    END""",
    )


MIGRATION: tuple[str, ...] = (
    # The SMS log filtered by a rare status (failed, ambiguous) must not walk a year of rows.
    # Rule and gateway get none: the reports read the rollups, and a (rule, ...) index would
    # lure the planner away from messages_number in the policy reads.
    "CREATE INDEX messages_state_created ON messages(state, created_at)",
    # Retention finds what it has not yet done without rescanning what it has.
    "CREATE INDEX messages_unpruned ON messages(created_at)"
    " WHERE text IS NOT NULL OR number IS NOT NULL",
    "CREATE INDEX calls_created ON calls(created_at)",
    "CREATE INDEX receipts_unmatched ON receipts(received_at) WHERE message_id IS NULL",
    f"""CREATE TABLE report_daily (
        day TEXT NOT NULL, rule TEXT NOT NULL, gateway TEXT NOT NULL, state TEXT NOT NULL,
        reason TEXT NOT NULL, error_code TEXT NOT NULL,
        n INTEGER NOT NULL, sent INTEGER NOT NULL, segments INTEGER NOT NULL,
        linked INTEGER NOT NULL, clicked INTEGER NOT NULL, clicks INTEGER NOT NULL,
        PRIMARY KEY ({_KEY})
    ) WITHOUT ROWID""",
    """CREATE TABLE report_hist (
        day TEXT NOT NULL, rule TEXT NOT NULL, gateway TEXT NOT NULL, metric TEXT NOT NULL,
        bucket INTEGER NOT NULL, n INTEGER NOT NULL, total REAL NOT NULL,
        PRIMARY KEY (day, rule, gateway, metric, bucket)
    ) WITHOUT ROWID""",
    """CREATE TABLE report_slots (
        slot TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL, sent INTEGER NOT NULL,
        PRIMARY KEY (slot, state)
    ) WITHOUT ROWID""",
    """CREATE TABLE report_replies (
        day TEXT NOT NULL, rule TEXT NOT NULL, gateway TEXT NOT NULL, label TEXT NOT NULL,
        n INTEGER NOT NULL, rating_sum INTEGER NOT NULL, ratings INTEGER NOT NULL,
        opt_outs INTEGER NOT NULL,
        PRIMARY KEY (day, rule, gateway, label)
    ) WITHOUT ROWID""",
    *triggers(TEXT),
    # Backfill from the rows already there (a one-off full read on upgrade).
    f"""INSERT INTO report_daily ({_KEY}, n, sent, segments, linked, clicked, clicks)
        SELECT substr(m.created_at, 1, 10), m.rule, m.gateway, m.state,
               coalesce(m.reason, ''), coalesce(m.error_code, ''), count(*),
               count(m.submitted_at),
               coalesce(sum(CASE WHEN m.submitted_at IS NOT NULL THEN m.segments END), 0),
               coalesce(sum(k.message_id IS NOT NULL), 0), coalesce(sum(k.clicks > 0), 0),
               coalesce(sum(k.clicks), 0)
        FROM messages m LEFT JOIN (SELECT l.message_id, count(c.id) AS clicks FROM links l
            LEFT JOIN clicks c ON c.code = l.code WHERE l.message_id IS NOT NULL
            GROUP BY l.message_id) k ON k.message_id = m.id
        GROUP BY 1, 2, 3, 4, 5, 6""",
    f"""INSERT INTO report_slots (slot, state, n, sent)
        SELECT {slot_sql("m.created_at")}, m.state, count(*), count(m.submitted_at)
        FROM messages m GROUP BY 1, 2""",
    f"""INSERT INTO report_hist (day, rule, gateway, metric, bucket, n, total)
        SELECT substr(m.created_at, 1, 10), m.rule, m.gateway, 'h2s',
               {bucket_sql("m.hangup_to_submit_ms")}, count(*), sum(m.hangup_to_submit_ms)
        FROM messages m WHERE m.submitted_at IS NOT NULL AND m.hangup_to_submit_ms IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5""",
    f"""INSERT INTO report_hist (day, rule, gateway, metric, bucket, n, total)
        SELECT substr(m.created_at, 1, 10), m.rule, m.gateway, 'delivery',
               {bucket_sql(delivery_seconds_sql("m"))}, count(*), sum({delivery_seconds_sql("m")})
        FROM messages m WHERE m.state = 'delivered' AND m.final_at IS NOT NULL
            AND m.submitted_at IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5""",
    """INSERT INTO report_replies (day, rule, gateway, label, n, rating_sum, ratings, opt_outs)
        SELECT substr(m.created_at, 1, 10), m.rule, m.gateway,
               CASE WHEN p.keyword IS NOT NULL THEN 'keyword' WHEN p.sentiment IS NULL
               THEN 'unrated' WHEN p.sentiment >= 0.05 THEN 'positive'
               WHEN p.sentiment <= -0.05 THEN 'negative' ELSE 'neutral' END,
               count(*), coalesce(sum(p.rating), 0), count(p.rating),
               count(DISTINCT CASE WHEN p.action = 'opt_out' THEN m.id END)
        FROM replies p JOIN messages m ON m.id = p.message_id GROUP BY 1, 2, 3, 4""",
)
