"""runwatch's own metrics, on a registry of its own (tests build a fresh one each).

Labels are bounded: provider, reason, kind, rule, channel, status; never a run or monitor id.
Counters whose label values are known up front are created at 0 by :meth:`Metrics.prime`, so an
``increase()`` alert sees the very first error, and no ``_created`` series are exported.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runwatch import __version__
from runwatch.clock import Clock
from runwatch.errors import FencedOut, StateUnavailableError
from runwatch.model import ChangeKind

#: ``reason`` labels of poll errors that exist at 0 from the start (others, e.g. ``http_418``, appear
#: when they happen; HTTP statuses keep the label bounded).
POLL_ERROR_REASONS = (
    "auth",
    "not_found",
    "timeout",
    "connect",
    "bad_json",
    "http_400",
    "http_408",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "bad_shape",
    "bad_id",
    "unusable_run",
    "oversize_page",
    "cursor_loop",
    "too_many_pages",
    "too_large",
    "retired",
    "event_no_id",
    "event_no_ts",
)
#: Reasons a request is retried for (the others fail at once or are not about a request).
RETRIED_REASONS = frozenset(
    {"timeout", "connect", "bad_json", "http_408", "http_429", "http_500", "http_502", "http_503", "http_504"}
)
#: Outcomes of one poll cycle (``crash`` is a bug in runwatch, caught so the loop goes on).
POLL_OUTCOMES = ("ok", "error", "crash")
CHANGE_KINDS = tuple(k.value for k in ChangeKind)
#: Transitions of a lifecycle rule's alert (``runwatch_alert_transitions_total{event}``): ``grouped`` is
#: one grouped notification sent, ``flapping``/``flapping_ended`` a group starting/ending to flap.
ALERT_TRANSITIONS = ("fired", "repeated", "resolved", "grouped", "flapping", "flapping_ended")
#: Outcomes of one delivery attempt.
DELIVERY_OUTCOMES = ("delivered", "retry", "permanent", "expired")
#: Why a delivery attempt failed: the reasons every channel kind can meet (others appear when they
#: happen: http_408, http_409, http_425, redirect, tls, smtp; the set is bounded).
DELIVERY_FAILURE_REASONS = ("http_5xx", "http_429", "http_4xx", "timeout", "connect", "error")
#: What became of one request to the push listener (``runwatch_ingest_requests_total{outcome}``).
INGEST_OUTCOMES = (
    "accepted", "duplicate", "bad_signature", "stale", "too_large", "bad_body", "ignored", "not_found",
)  # fmt: skip
#: The ``provider`` label of a push request whose path names no provider (a scanner, a typo).
NO_PROVIDER = "none"
#: Why a call to the state failed (``runwatch_state_errors_total{reason}``): its database could not be
#: reached, a write was refused by its fence (this instance lost the lease), or anything else.
STATE_ERROR_REASONS = ("unavailable", "fenced", "other")
#: Why a live-log stream ended (``runwatch_live_stream_drops_total{reason}``): the server ended it
#: (``closed``) or sent ``error``; nothing, not even a heartbeat, for 3 intervals (``heartbeat``); no
#: connection (``connect``); a 429 or 5xx (``http``); any other 4xx, the key refused say (``refused``);
#: a stream that broke the event-stream format (``bad_stream``).
LIVE_DROP_REASONS = ("closed", "error", "heartbeat", "connect", "http", "refused", "bad_stream")


class Metrics:
    """Every metric runwatch exports, on one injected registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # ``_created`` series double the series count and nobody graphs them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Info("runwatch_build", "runwatch version and Python it runs on.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.polls = Counter(
            "runwatch_polls_total",
            "Poll cycles finished, by provider and outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self.poll_errors = Counter(
            "runwatch_poll_errors_total",
            "Failed API requests by provider and reason (http_5xx, http_429, timeout, bad_json, auth, ...).",
            ["provider", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "runwatch_api_requests_total",
            "HTTP requests sent to a provider, retries included.",
            ["provider", "endpoint"],
            registry=r,
        )
        self.retries = Counter(
            "runwatch_api_retries_total",
            "Requests retried after an error, by provider and reason.",
            ["provider", "reason"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "runwatch_poll_duration_seconds",
            "Duration of one poll cycle of a provider.",
            ["provider"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.last_success = Gauge(
            "runwatch_last_successful_poll_timestamp_seconds",
            "Unix time of the last poll cycle of a provider that finished without errors.",
            ["provider"],
            registry=r,
        )
        self.runs_tracked = Gauge(
            "runwatch_runs_tracked",
            "Runs in the state, by provider and last status.",
            ["provider", "status"],
            registry=r,
        )
        self.changes = Counter(
            "runwatch_changes_detected_total",
            "Changes detected, by provider and kind.",
            ["provider", "kind"],
            registry=r,
        )
        self.unmatched = Counter(
            "runwatch_changes_unmatched_total",
            "Changes no rule matched (counted, not sent).",
            ["provider", "kind"],
            registry=r,
        )
        self.rule_matches = Counter(
            "runwatch_rule_matches_total",
            "Changes a rule matched.",
            ["rule"],
            registry=r,
        )
        self.sent = Counter(
            "runwatch_notifications_sent_total",
            "Notifications delivered, by channel.",
            ["channel"],
            registry=r,
        )
        self.dead = Counter(
            "runwatch_notifications_dead_total",
            "Notifications given up (max_attempts, a permanent error, or max_age); kept as dead letters.",
            ["channel"],
            registry=r,
        )
        self.silenced = Counter(
            "runwatch_notifications_silenced_total",
            "Notifications not sent because a silence matched when they were due.",
            ["channel"],
            registry=r,
        )
        self.unsilenced = Counter(
            "runwatch_notifications_unsilenced_total",
            "Silenced notifications sent after all: their silence ended while their alert was open.",
            ["channel"],
            registry=r,
        )
        self.attempts = Counter(
            "runwatch_delivery_attempts_total",
            "Send attempts by channel and outcome (delivered, retry, permanent, expired).",
            ["channel", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "runwatch_delivery_failures_total",
            "Failed send attempts by channel and reason (http_5xx, http_429, timeout, connect, ...).",
            ["channel", "reason"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "runwatch_channel_circuit_open",
            "1 while a channel keeps failing and is probed with one notification at a time.",
            ["channel"],
            registry=r,
        )
        self.latency = Histogram(
            "runwatch_delivery_latency_seconds",
            "From detection of a change to its channel's acknowledgement.",
            ["channel"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )
        self.rules_loaded = Gauge("runwatch_rules_loaded", "Rules in force.", registry=r)
        self.reloads = Counter(
            "runwatch_config_reloads_total",
            "Config and rule reloads by outcome (success, failure).",
            ["outcome"],
            registry=r,
        )
        self.provider_up = Gauge(
            "runwatch_provider_up",
            "1 when the provider's last poll cycle succeeded, else 0.",
            ["provider"],
            registry=r,
        )
        self.alert_transitions = Counter(
            "runwatch_alert_transitions_total",
            "Lifecycle rules' alerts by transition (fired, repeated, resolved, grouped, flapping,"
            " flapping_ended).",
            ["event"],
            registry=r,
        )
        self.alerts_firing = Gauge("runwatch_alerts_firing", "Lifecycle rules' alerts open now.", registry=r)
        self.ready = Gauge(
            "runwatch_ready",
            "1 while /readyz answers 200 (every enabled provider polled successfully of late), else 0.",
            registry=r,
        )
        self.last_reload_ok = Gauge(
            "runwatch_config_last_reload_successful",
            "1 when the last config reload (or the start) succeeded, 0 after a reload that failed.",
            registry=r,
        )
        self.last_reload_ok.set(1)
        self.leader = Gauge(
            "runwatch_leader",
            "1 while this instance polls the provider (holds its lease), else 0.",
            ["provider"],
            registry=r,
        )
        self.leader_changes = Counter(
            "runwatch_leader_changes_total",
            "Times this instance became the provider's poller (summed over instances: the handovers).",
            ["provider"],
            registry=r,
        )
        self.config_mismatch = Gauge(
            "runwatch_config_mismatch",
            "1 while the instances sharing the state run configs (rules, providers, channels, delivery,"
            " silences) whose digests differ.",
            registry=r,
        )
        self.last_reload_success = Gauge(
            "runwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load: the start, or a reload that was applied.",
            registry=r,
        )
        self.ingest = Counter(
            "runwatch_ingest_requests_total",
            "Requests to the push listener by provider and outcome (accepted, duplicate, bad_signature,"
            " stale, too_large, bad_body, ignored, not_found).",
            ["provider", "outcome"],
            registry=r,
        )
        self.push_to_read = Histogram(
            "runwatch_push_to_read_seconds",
            "From a push received to the read of the run (or monitor) it named.",
            ["provider"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )

        self.state_up = Gauge(
            "runwatch_state_up",
            "1 while the state (SQLite file or PostgreSQL database) answers, 0 since a call to it found it"
            " unreachable (until one succeeds again).",
            registry=r,
        )
        self.state_up.set(1)  # the daemon starts only on a state that answered
        self.state_errors = Counter(
            "runwatch_state_errors_total",
            "Calls to the state that failed, by reason (unavailable, fenced, other).",
            ["reason"],
            registry=r,
        )
        for reason in STATE_ERROR_REASONS:
            self.state_errors.labels(reason)
        #: Why the state does not answer now (the last failure's line), None while it does.
        self.state_problem: str | None = None

        self.live_streams = Gauge(
            "runwatch_live_streams",
            "Live-log streams (Olostep's agent-log stream of a run in flight) open now, by provider.",
            ["provider"],
            registry=r,
        )
        self.live_drops = Counter(
            "runwatch_live_stream_drops_total",
            "Live-log streams that ended and are reopened (with backoff), by provider and reason.",
            ["provider", "reason"],
            registry=r,
        )

    def state_answered(self) -> None:
        """A call to the state succeeded: it is up (again)."""
        if self.state_problem is not None:
            self.state_problem = None
            self.state_up.set(1)

    def state_failed(self, exc: BaseException) -> str:
        """Count a failed call to the state by its reason (returned); an unreachable state is down."""
        if isinstance(exc, FencedOut):
            reason = "fenced"
        elif isinstance(exc, StateUnavailableError):
            reason = "unavailable"
            self.state_problem = str(exc)
            self.state_up.set(0)
        else:
            reason = "other"
        self.state_errors.labels(reason).inc()
        return reason

    def prime_live(self, provider: str) -> None:
        """The live-log series of ``provider`` at 0 (a provider whose runs can be streamed)."""
        self.live_streams.labels(provider)
        for reason in LIVE_DROP_REASONS:
            self.live_drops.labels(provider, reason)

    def prime_ingest(self, providers: Iterable[str]) -> None:
        """The push listener's series at 0 (called when ``ingest_listen`` is set)."""
        for p in [*providers, NO_PROVIDER]:
            for outcome in INGEST_OUTCOMES if p != NO_PROVIDER else ("not_found",):
                self.ingest.labels(p, outcome)
            if p != NO_PROVIDER:
                self.push_to_read.labels(p)

    def prime(self, providers: Iterable[str], channels: Iterable[str], rules: Iterable[str]) -> None:
        """Create every series whose labels are known now, at 0, so dashboards and alerts see them.

        Called once at start (and for the rules again after a reload). Values already counted stay.
        """
        for p in providers:
            for outcome in POLL_OUTCOMES:
                self.polls.labels(p, outcome)
            for reason in POLL_ERROR_REASONS:
                self.poll_errors.labels(p, reason)
                if reason in RETRIED_REASONS:
                    self.retries.labels(p, reason)
            for kind in CHANGE_KINDS:
                self.changes.labels(p, kind)
                self.unmatched.labels(p, kind)
            self.poll_duration.labels(p)
            self.provider_up.labels(p)
            self.leader.labels(p)
            self.leader_changes.labels(p)
        for c in channels:
            self.sent.labels(c)
            self.dead.labels(c)
            self.silenced.labels(c)
            self.unsilenced.labels(c)
            self.latency.labels(c)
            for outcome in DELIVERY_OUTCOMES:
                self.attempts.labels(c, outcome)
            for reason in DELIVERY_FAILURE_REASONS:
                self.failures.labels(c, reason)
            self.circuit_open.labels(c)
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)
        for event in ALERT_TRANSITIONS:
            self.alert_transitions.labels(event)
        self.prime_rules(rules)

    def prime_rules(self, rules: Iterable[str]) -> None:
        """A series at 0 for each rule in force (after a reload too)."""
        for rule in rules:
            self.rule_matches.labels(rule)


class OutboxCollector(Collector):
    """Outbox depth by channel and state, and the oldest pending age, read from the state at scrape."""

    def __init__(self, outbox: OutboxView, channels: Iterable[str], clock: Clock) -> None:
        self.outbox = outbox
        self.channels = list(channels)
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "runwatch_outbox_notifications",
            "Notifications in the outbox by channel and state (pending, sent, dead, silenced).",
            labels=["channel", "state"],
        )
        age = GaugeMetricFamily(
            "runwatch_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending notification per channel (0 when none is pending).",
            labels=["channel"],
        )
        try:
            counts = self.outbox.counts()
            oldest = self.outbox.oldest_pending()
        except Exception:  # a busy or closed state must not break /metrics
            return
        now = self.clock.now()
        for channel in sorted(set(self.channels) | {c for c, _ in counts}):
            for state in ("pending", "sent", "dead", "silenced"):
                depth.add_metric([channel, state], counts.get((channel, state), 0))
            age.add_metric([channel], max(0.0, now - oldest[channel]) if channel in oldest else 0.0)
        yield depth
        yield age


class OutboxView(Protocol):
    def counts(self) -> dict[tuple[str, str], int]: ...

    def oldest_pending(self) -> dict[str, float]: ...
