"""The stages between a source and the outbox, one small class each.

    MonitorBatch -> Detect (diff against the state; baseline on first sight) -> Match (rules)
                 -> Record (state + outbox rows in one transaction) -> wake Delivery

A later stage (grouping, silences, flap damping) slots in between Match and Record as another
``Stage``; nothing before or after it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runwatch.clock import Clock
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import Change
from runwatch.rules import Decision, RuleSet
from runwatch.sources.base import MonitorBatch
from runwatch.state import Notification, Store, diff

log = get_logger(__name__)


@dataclass(slots=True)
class Batch:
    """What flows through the stages for one monitor's poll."""

    source: MonitorBatch
    now: float
    changes: list[Change] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    baseline: bool = False


class Detect:
    """Diff each snapshot against the state; a monitor read for the first time is a silent baseline."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.baselined: set[str] = {
            p for p in ("exa", "olostep") if store.get_meta(f"baseline_done:{p}") == "1"
        }

    def provider_settled(self, provider: str) -> None:
        """The provider's first error-free poll cycle is over: new monitors are news from now on."""
        if provider not in self.baselined:
            self.store.set_meta(f"baseline_done:{provider}", "1")
            self.baselined.add(provider)

    def __call__(self, batch: Batch) -> None:
        src = batch.source
        batch.baseline = src.provider not in self.baselined and not self.store.knows_monitor(
            src.provider, src.monitor_id
        )
        for snap in src.snapshots:
            batch.changes.extend(diff(self.store.run(src.provider, snap.run_id), snap, batch.now))
        if batch.baseline:
            if batch.changes:
                log.info(
                    "baseline.recorded",
                    provider=src.provider,
                    monitor_id=src.monitor_id,
                    runs=len(src.snapshots),
                    changes_silenced=len(batch.changes),
                )
            batch.changes = []
        for ch in batch.changes:
            self.metrics.changes.labels(ch.provider, ch.kind.value).inc()
            log.info(
                "change.detected",
                provider=ch.provider,
                monitor_id=ch.monitor_id,
                run_id=ch.run_id,
                kind=ch.kind.value,
                from_status=ch.from_status,
                to_status=ch.to_status,
                step=ch.event.name if ch.event else None,
            )


class Match:
    """Ask the rules in force about each change; a change nothing matched is counted, not sent."""

    def __init__(self, rules: Callable[[], RuleSet], metrics: Metrics) -> None:
        self.rules = rules
        self.metrics = metrics

    def __call__(self, batch: Batch) -> None:
        ruleset = self.rules()
        for ch in batch.changes:
            decisions = ruleset.match(ch)
            if not decisions:
                self.metrics.unmatched.labels(ch.provider, ch.kind.value).inc()
            for d in decisions:
                self.metrics.rule_matches.labels(d.rule).inc()
                log.info("rule.matched", rule=d.rule, run_id=ch.run_id, channels=",".join(d.channels))
            batch.decisions.extend(decisions)


class Record:
    """Mark everything seen and queue what was decided, atomically; then wake the senders."""

    def __init__(self, store: Store, wake: Callable[[], None]) -> None:
        self.store = store
        self.wake = wake

    def __call__(self, batch: Batch) -> None:
        notes = [
            Notification(
                channel=ch,
                rule=d.rule,
                severity=d.severity,
                title=d.title,
                body=d.body,
                change_key=d.change.key,
                detected_at=d.change.detected_at,
            )
            for d in batch.decisions
            for ch in d.channels
        ]
        src = batch.source
        queued = self.store.record(src.provider, src.snapshots, notes, batch.now, monitor_id=src.monitor_id)
        if queued:
            self.wake()


Stage = Callable[[Batch], None]


class Pipeline:
    def __init__(self, stages: Sequence[Stage], clock: Clock) -> None:
        self.stages = list(stages)
        self.clock = clock

    async def __call__(self, source_batch: MonitorBatch) -> None:
        batch = Batch(source_batch, self.clock.now())
        for stage in self.stages:
            stage(batch)
