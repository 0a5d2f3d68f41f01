"""Spend control: what a text costs (per gateway and destination prefix) and the caps it may not pass.

Prices are per segment, in ``defaults.currency``; the longest destination prefix listed for
the text's gateway wins, then that gateway's ``default``, then ``defaults.price_per_segment``.
Caps hold per local day and month (``defaults.timezone``), for all texts together and per
rule. The running totals live in memory (seeded from the store at start, like the rate
counters), so judging a text never scans a month of messages. Pure: no asyncio, no store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Caps:
    """At most this much per local day / month; None: no cap."""

    daily: Decimal | None = None
    monthly: Decimal | None = None

    def __bool__(self) -> bool:
        return self.daily is not None or self.monthly is not None


@dataclass(frozen=True, slots=True)
class SpendPolicy:
    """Operator-wide spend settings (a rule's own caps travel in its Decision)."""

    currency: str | None = None
    # gateway -> ((prefix, price), ...) longest prefix first; "" is the gateway's default
    prices: Mapping[str, tuple[tuple[str, Decimal], ...]] = field(default_factory=dict)
    fallback: Decimal | None = None  # defaults.price_per_segment
    caps: Caps = Caps()
    timezone: str = "UTC"

    @classmethod
    def build(cls, prices: Mapping[str, Mapping[str, Decimal]], **kw: object) -> SpendPolicy:
        table = {
            gw: tuple(sorted((("" if p == "default" else p), v) for p, v in per.items())[::-1])
            for gw, per in prices.items()
        }
        # sorted descending puts "+9198" before "+91" before "": longest prefix first
        return cls(prices=table, **kw)  # type: ignore[arg-type]

    def price(self, gateway: str, number: str | None) -> Decimal | None:
        for prefix, price in self.prices.get(gateway, ()):
            if number is not None and number.startswith(prefix):
                return price
        return self.fallback

    def cost(self, gateway: str, number: str | None, segments: int) -> Decimal | None:
        price = self.price(gateway, number)
        return None if price is None else price * segments

    @property
    def active(self) -> bool:
        """Anything to enforce (caps on texts or rules are only read when priced)."""
        return bool(self.prices) or self.fallback is not None


@dataclass(frozen=True, slots=True)
class Spent:
    """Totals so far in the current local day and month: the rule's and everyone's."""

    rule_day: Decimal = ZERO
    rule_month: Decimal = ZERO
    day: Decimal = ZERO
    month: Decimal = ZERO


def over_cap(cost: Decimal, spent: Spent, caps: Caps, rule_caps: Caps | None,
             rule: str, currency: str | None) -> str | None:
    """Why sending a text costing ``cost`` would pass a cap, or None."""
    unit = f" {currency}" if currency else ""
    checks = [("daily", caps.daily, spent.day, "all texts"),
              ("monthly", caps.monthly, spent.month, "all texts")]
    if rule_caps is not None:
        checks = [("daily", rule_caps.daily, spent.rule_day, f"rule {rule}"),
                  ("monthly", rule_caps.monthly, spent.rule_month, f"rule {rule}"), *checks]
    for period, cap, so_far, whose in checks:
        if cap is not None and so_far + cost > cap:
            span = "day" if period == "daily" else "month"
            return (f"{whose}: {so_far}{unit} spent this {span} + {cost}{unit} would pass "
                    f"the {period} cap of {cap}{unit}")
    return None


class SpendCounters:
    """Running totals per local day and month, for everyone and per rule."""

    def __init__(self, timezone: str = "UTC") -> None:
        self._tz = ZoneInfo(timezone)
        self._totals: dict[tuple[str, str], Decimal] = {}  # (rule or "", period key) -> sum
        # The last local date's keys: every text of a day asks for the same two, and
        # formatting them (strftime) cost ~25 us a call, twice per text judged, in the
        # writer's transaction between the hangup and the submit_sm. One tuple, replaced
        # whole: a reader on another thread sees an old pair or a new one, never a mix.
        self._memo: tuple[date, tuple[str, str]] | None = None

    def _keys(self, at: datetime) -> tuple[str, str]:
        day = at.astimezone(self._tz).date()
        memo = self._memo
        if memo is not None and memo[0] == day:
            return memo[1]
        iso = day.isoformat()  # YYYY-MM-DD
        keys = (iso, iso[:7])
        self._memo = (day, keys)
        return keys

    def spent(self, rule: str, now: datetime) -> Spent:
        day, month = self._keys(now)
        t = self._totals
        return Spent(t.get((rule, day), ZERO), t.get((rule, month), ZERO),
                     t.get(("", day), ZERO), t.get(("", month), ZERO))

    def add(self, rule: str, cost: Decimal, at: datetime, sign: int = 1) -> None:
        for key in self._keys(at):
            for who in (rule, ""):
                self._totals[(who, key)] = self._totals.get((who, key), ZERO) + sign * cost
        if len(self._totals) > 4096:  # old days and months: only the current ones are read
            self._forget(at)

    def discard(self, rule: str, cost: Decimal, at: datetime) -> None:
        self.add(rule, cost, at, sign=-1)

    def _forget(self, now: datetime) -> None:
        day, month = self._keys(now)
        self._totals = {k: v for k, v in self._totals.items() if k[1] in (day, month)}

    def seed(self, rows: Iterable[tuple[str, Decimal, datetime]]) -> None:
        """``(rule, cost, sent_at)`` of texts already sent this month."""
        for rule, cost, at in rows:
            self.add(rule, cost, at)

    def totals(self, now: datetime) -> Spent:
        return self.spent("", now)
