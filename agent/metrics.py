"""The agent's Prometheus metrics: one registry, the metric objects, and the calls that feed them."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agent.models import CallRecord, MessageState, ReceiptState

# Hangup -> submit is budgeted at p50 <= 50 ms, p99 <= 250 ms (DESIGN section 7): buckets are
# dense there and sparse up to the vendor's ~2 s anchor.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# Event-loop lag: budget p99 <= 20 ms, max <= 100 ms (Asterisk's writetimeout), so dense below.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SUBMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Owns a private ``CollectorRegistry`` (never the global one, so tests and several agents
    in one process do not collide). Every method is cheap and never raises."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._refresh: list[Callable[[], None]] = []
        # What ``_catch_up`` has counted of a component's own totals, per counter and labels.
        self._seen: dict[tuple[Counter, tuple[str, ...]], float] = {}
        r = self.registry
        self.calls = Counter(
            "aftercall_calls_total", "Call records completed, by disposition", ["disposition"],
            registry=r)
        self.rule_matches = Counter(
            "aftercall_rule_matches_total", "Rules that matched a call", ["rule"], registry=r)
        self.messages = Counter(
            "aftercall_messages_total", "Messages entering a state, with the reason if any",
            ["state", "reason"], registry=r)
        self.gateway_submit_seconds = Histogram(
            "aftercall_gateway_submit_seconds", "Time a gateway took to accept a submit",
            ["gateway"], buckets=_SUBMIT_BUCKETS, registry=r)
        self.hangup_to_submit_seconds = Histogram(
            "aftercall_hangup_to_submit_seconds", "From the call's hangup to the gateway's accept",
            buckets=_LATENCY_BUCKETS, registry=r)
        # AMI figures are per PBX (pbx="default" for an agent on the one PBX of its settings).
        self.ami_connected = Gauge(
            "aftercall_ami_connected", "1 while the AMI link to this PBX is logged in, else 0",
            ["pbx"], registry=r)
        self.ami_queue_depth = Gauge(
            "aftercall_ami_queue_depth", "AMI events waiting between reader and tracker",
            ["pbx"], registry=r)
        self.ami_reconnects = Counter(
            "aftercall_ami_reconnects_total", "AMI reconnections", ["pbx"], registry=r)
        self.ami_events_dropped = Counter(
            "aftercall_ami_events_dropped_total", "AMI events dropped by a full queue",
            ["pbx"], registry=r)
        self.receipts = Counter(
            "aftercall_receipts_total", "Delivery receipts received, by state", ["state"],
            registry=r)
        self.replies = Counter(
            "aftercall_replies_total", "Replies received, by sentiment (or keyword)",
            ["sentiment"], registry=r)
        self.store_healthy = Gauge(
            "aftercall_store_healthy", "1 when the store took its last write, else 0", registry=r)
        self.store_healthy.set(1)
        self.event_loop_lag_seconds = Histogram(
            "aftercall_event_loop_lag_seconds", "How late the event loop (the one reading AMI) "
            "woke from a timed sleep", buckets=_LAG_BUCKETS, registry=r)
        self.calls_unrecorded = Gauge(
            "aftercall_calls_unrecorded", "Ended calls waiting for the store to take them "
            "(disk full, database locked); retried until it does", registry=r)
        self.records_pending = Gauge(
            "aftercall_records_pending", "Call records taken from AMI and not yet stored "
            "(never dropped: past the pipeline's capacity the AMI socket is no longer read)",
            registry=r)
        self.records_oldest_age = Gauge(
            "aftercall_records_oldest_age_seconds", "How long the oldest pending call record "
            "has waited for the store", registry=r)
        self.calls_awaiting_wrapup = Gauge(
            "aftercall_calls_awaiting_wrapup", "Ended calls held for their agent's wrap-up code "
            "(stored; decided when the code comes or the rule's wrapup.wait ends)", registry=r)
        self.ami_reading_paused = Counter(
            "aftercall_ami_reading_paused_total", "Times the AMI socket was no longer read "
            "because the call records were behind (back-pressure)", ["pbx"], registry=r)
        self.refusal_bursts_total = Counter(
            "aftercall_sms_refusal_bursts_total", "Bursts of refused texts (rate_limited, "
            "country_not_allowed): SMS pumping or a limit set too tight", ["reason"], registry=r)
        self.spend_total = Gauge(
            "aftercall_spend", "Spent on texts this local day / month (defaults.currency)",
            ["period"], registry=r)
        self.spend_cap = Gauge(
            "aftercall_spend_cap", "The spend cap for all texts per local day / month "
            "(absent: no cap); a text that would pass it is suppressed (spend_cap)",
            ["period"], registry=r)
        self.refusal_burst_active = Gauge(
            "aftercall_sms_refusal_burst", "1 while refusals for this reason are bursting",
            ["reason"], registry=r)

        self.heap_trims_total = Counter(
            "aftercall_heap_trims_total", "Times the C heap's free pages were handed back to "
            "the system (glibc malloc_trim, in a thread of its own)", registry=r)
        self.heap_trim_cpu_seconds = Counter(
            "aftercall_heap_trim_cpu_seconds", "CPU the heap trims took in all", registry=r)
        self.heap_trim_seconds_max = Gauge(
            "aftercall_heap_trim_seconds_max", "The longest heap trim so far: how long a "
            "malloc of the AMI-reading loop could have waited for it", registry=r)

    # -- the calls the rest of the agent makes --------------------------------------------------

    def call_completed(self, record: CallRecord) -> None:
        """A call record was emitted by the tracker."""
        self.calls.labels(disposition=record.disposition.value).inc()

    def rule_matched(self, rule: str) -> None:
        self.rule_matches.labels(rule=rule).inc()

    def message_state(self, state: MessageState | str, reason: str | None = None) -> None:
        """A message row moved to ``state`` (``reason``: a SuppressReason or gateway reason)."""
        self.messages.labels(state=str(state), reason=reason or "").inc()

    def gateway_submitted(self, gateway: str, seconds: float) -> None:
        """A gateway accepted a submit after ``seconds``."""
        self.gateway_submit_seconds.labels(gateway=gateway).observe(max(0.0, seconds))

    def hangup_to_submit(self, seconds: float) -> None:
        self.hangup_to_submit_seconds.observe(max(0.0, seconds))

    def loop_lag(self, seconds: float) -> None:
        self.event_loop_lag_seconds.observe(max(0.0, seconds))

    def records(self, pending: int, oldest_age_s: float, awaiting_wrapup: int = 0) -> None:
        self.records_pending.set(pending)
        self.records_oldest_age.set(oldest_age_s)
        self.calls_awaiting_wrapup.set(awaiting_wrapup)

    def ami_link(self, pbx: str, *, connected: bool, queued: int, dropped: int,
                 paused: int) -> None:
        """One PBX's AMI link as its client counts it; the counters catch up to its totals."""
        self.ami_connected.labels(pbx=pbx).set(1 if connected else 0)
        self.ami_queue_depth.labels(pbx=pbx).set(queued)
        self._catch_up(self.ami_reading_paused, paused, pbx)
        self._catch_up(self.ami_events_dropped, dropped, pbx)

    def heap_trims(self, runs: int, cpu_s: float, longest_s: float) -> None:
        """The heap trimmer's own totals (agent.memory); the counters catch up to them."""
        self._catch_up(self.heap_trims_total, runs)
        self._catch_up(self.heap_trim_cpu_seconds, cpu_s)
        self.heap_trim_seconds_max.set(longest_s)

    def _catch_up(self, counter: Counter, total: float, *labels: str) -> None:
        """``counter`` (with ``labels``) brought up to a total a component keeps itself."""
        seen = self._seen.get((counter, labels), 0)
        if total > seen:
            (counter.labels(*labels) if labels else counter).inc(total - seen)
            self._seen[(counter, labels)] = total

    def ami_reconnected(self, pbx: str = "default") -> None:
        self.ami_reconnects.labels(pbx=pbx).inc()

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """``refresh`` runs before each render: for figures cheaper to read than to track."""
        self._refresh.append(refresh)

    def receipt(self, state: ReceiptState | str) -> None:
        self.receipts.labels(state=str(state)).inc()

    def reply(self, sentiment: str) -> None:
        """``sentiment``: positive, neutral, negative, or ``keyword`` for keyword replies."""
        self.replies.labels(sentiment=sentiment).inc()

    def store_health(self, healthy: bool) -> None:
        self.store_healthy.set(1 if healthy else 0)

    def unrecorded(self, pending: int) -> None:
        self.calls_unrecorded.set(pending)
        if pending:
            self.store_healthy.set(0)

    def spend(self, day: Decimal, month: Decimal, daily_cap: Decimal | None,
              monthly_cap: Decimal | None) -> None:
        """Spend so far against the caps (the dashboard and alerts compare them)."""
        self.spend_total.labels(period="day").set(float(day))
        self.spend_total.labels(period="month").set(float(month))
        for period, cap in (("day", daily_cap), ("month", monthly_cap)):
            if cap is not None:
                self.spend_cap.labels(period=period).set(float(cap))

    def refusal_burst(self, reason: str) -> None:
        self.refusal_bursts_total.labels(reason=reason).inc()
        self.refusal_burst_active.labels(reason=reason).set(1)

    def refusal_bursts(self, active: dict[str, bool]) -> None:
        for reason, on in active.items():
            self.refusal_burst_active.labels(reason=reason).set(1 if on else 0)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for ``GET /metrics``."""
        for refresh in self._refresh:
            refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
