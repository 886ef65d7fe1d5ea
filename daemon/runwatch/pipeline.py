"""The stages between a source and the outbox, one small class each.

    MonitorBatch -> Detect (diff against the state; baseline on first sight) -> Monitors (the
                 monitor object on each change; a scheduled run that came) -> Match (rules)
                 -> Record (state + outbox rows in one transaction) -> wake Delivery

A monitor listing goes through :meth:`Monitors.listing` (monitor.status changes) and the same
Match -> Lifecycle -> Record stages.

The Lifecycle stage (alerts of rules with lifecycle keys: open, repeat, resolve, grouping and flap
damping) sits between Match and Record; its time-driven half is :meth:`Lifecycle.tick`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from runwatch.clock import Clock
from runwatch.diff import diff
from runwatch.grouping import (
    BAD,
    GOOD,
    change_from_data,
    collect,
    flapping_ended,
    flush_due,
    flushed,
    forget_flips,
    observe,
)
from runwatch.lifecycle import (
    AlertUpdate,
    LifecycleRule,
    LifecycleSpec,
    OpenAlert,
    alert_key,
    close,
    completes_group,
    decide_match,
    repeat_alerts,
    resolves,
)
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import TERMINAL_STATUSES, Alert, Change, ChangeKind, bounded, cut_text, notification_id
from runwatch.monitors import MonitorWatch
from runwatch.rules import Decision, Rule, RuleSet
from runwatch.rules.templates import cut_title
from runwatch.sources.base import MonitorBatch, MonitorListing
from runwatch.sources.registry import PROVIDERS
from runwatch.store import State
from runwatch.store.alerts import SqliteAlerts
from runwatch.store.interfaces import MonitorRecord, Notification, Recorder

log = get_logger(__name__)


@dataclass(slots=True)
class Batch:
    """What flows through the stages for one monitor's poll."""

    source: MonitorBatch
    now: float
    changes: list[Change] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    baseline: bool = False
    alert_updates: list[AlertUpdate] = field(default_factory=list)
    monitor_updates: list[MonitorRecord] = field(default_factory=list)
    #: A provider whose first monitor listing this batch records (silently).
    monitors_baselined: str | None = None


class Detect:
    """Diff each snapshot against the state; a monitor read for the first time is a silent baseline."""

    def __init__(self, store: State, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.baselined: set[str] = {p for p in PROVIDERS if store.get_meta(f"baseline_done:{p}") == "1"}

    def provider_settled(self, provider: str) -> None:
        """The provider's first error-free poll cycle is over: new monitors are news from now on."""
        if provider not in self.baselined:
            self.store.set_meta(f"baseline_done:{provider}", "1")
            self.baselined.add(provider)

    def __call__(self, batch: Batch) -> None:
        src = batch.source
        batch.baseline = src.provider not in self.baselined and not self.store.runs.knows_monitor(
            src.provider, src.monitor_id
        )
        runs = self.store.runs
        for snap in src.snapshots:
            if runs.is_done(src.provider, snap.run_id):
                continue  # finished and reported before: nothing about it is news
            batch.changes.extend(diff(runs.run(src.provider, snap.run_id), snap, batch.now))
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


class Monitors:
    """Give each change the monitor as last listed; note a scheduled run that came (see
    :mod:`runwatch.monitors`). Also turns a listing into a batch of ``monitor.status`` changes."""

    def __init__(self, watch: MonitorWatch, metrics: Metrics) -> None:
        self.watch = watch
        self.metrics = metrics

    def __call__(self, batch: Batch) -> None:
        src = batch.source
        if src.monitor_id:
            raw = src.monitor
            if raw is None:
                raw = self.watch.monitors.raw(src.provider, src.monitor_id)
            if raw:
                batch.changes = [replace(ch, monitor=raw) for ch in batch.changes]
            rec = self.watch.polled(src, batch.now)
            if rec is not None:
                batch.monitor_updates.append(rec)

    def listing(self, listing: MonitorListing, now: float) -> Batch:
        """The batch a listing makes: its changes (none on the provider's first listing) and records."""
        out = self.watch.listing(listing, now)
        batch = Batch(MonitorBatch(listing.provider, "", []), now, changes=out.changes)
        batch.monitor_updates = out.updates
        batch.monitors_baselined = out.baselined
        if out.baselined:
            log.info("monitors.baseline", provider=listing.provider, monitors=len(listing.monitors))
        for ch in out.changes:
            self.metrics.changes.labels(ch.provider, ch.kind.value).inc()
            log.info(
                "change.detected", provider=ch.provider, monitor_id=ch.monitor_id, kind=ch.kind.value,
                from_status=ch.from_status, to_status=ch.to_status,
            )  # fmt: skip
        return batch


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


def alerts_for(decision: Decision, key: str | None = None) -> list[Alert]:
    """One alert per channel of a decision: the change (or the group of them) and the decision, as data.

    ``key`` names a notification that is not one change's (a grouped or flapping one); it makes the id.
    """
    ch = decision.change
    ev = ch.event
    return [
        Alert(
            id=notification_id(key or ch.key, decision.rule, channel),
            type=ch.kind.value,
            channel=channel,
            provider=ch.provider,
            monitor_id=ch.monitor_id,
            run_id=ch.run_id,
            rule=decision.rule,
            severity=decision.severity,
            title=decision.title,
            body=decision.body,
            detected_at=ch.detected_at,
            occurred_at=ch.occurred_at if ch.occurred_at is not None else ch.detected_at,
            from_status=ch.from_status,
            to_status=ch.to_status,
            event=cut_text(ev.name) if ev else None,
            message=cut_text(ev.message) if ev else None,
            failed_reason=cut_text(ch.failed_reason) if ch.failed_reason is not None else None,
            labels=dict(decision.labels),
            run=bounded(ch.run),
            format=decision.format,
            status="resolved" if ch.resolved else "firing",
            alerts=tuple(c.payload_item() for c in decision.group),
        )
        for channel in decision.channels
    ]


def _prefixed(decision: Decision, prefix: str) -> Decision:
    return replace(decision, title=cut_title(f"{prefix} {decision.title}"))


class Lifecycle:
    """For rules with lifecycle keys: a match opens an alert (notify) or finds it open (quiet); a run
    of its monitor completing closes it (a resolved notification if the rule asks). With grouping,
    matches are collected and sent by :meth:`tick`; with flap damping, a group alternating too often
    is reported once as flapping and then kept quiet. Rules without those keys pass through untouched.
    The alert changes go to Record, into the same transaction."""

    def __init__(self, alerts: SqliteAlerts, rules: Callable[[], RuleSet], metrics: Metrics) -> None:
        self.alerts = alerts
        self.rules = rules
        self.metrics = metrics
        self._indexed: RuleSet | None = None
        self._by_name: dict[str, Rule] = {}

    def _rule(self, name: str) -> Rule | None:
        ruleset = self.rules()
        if ruleset is not self._indexed:
            self._by_name = {r.name: r for r in ruleset}
            self._indexed = ruleset
        return self._by_name.get(name)

    @staticmethod
    def _lifecycle_rule(rule: Rule) -> LifecycleRule:
        assert rule.lifecycle is not None
        return LifecycleRule(rule.name, rule.lifecycle, rule.labels)

    def __call__(self, batch: Batch) -> None:
        now = batch.now
        touched: dict[str, OpenAlert] = {}
        matched: dict[str, Change] = {}  # alert key -> the last change of this batch the rule matched
        fired: dict[str, Decision] = {}  # alert key -> the decision that opened it
        kept: list[Decision] = []
        for d in batch.decisions:
            rule = self._rule(d.rule)
            if rule is None or rule.lifecycle is None:
                kept.append(d)
                continue
            lr = self._lifecycle_rule(rule)
            key = alert_key(rule.name, lr.group(d.change))
            alert, notify = decide_match(touched.get(key) or self.alerts.get(key), lr, d.change, now)
            matched[key] = d.change
            if notify:
                fired.setdefault(key, d)
            if lr.spec.grouped() and alert.firing:
                alert = collect(alert, d.change, now, lr.spec.wait())
            touched[key] = alert
        # A run completing: the alerts it resolves (and, for flap damping, the groups it belongs to).
        completed: dict[str, tuple[Change, bool]] = {}
        for ch in batch.changes:
            # A run that ends may close an alert; so may a run first seen (a missed run that came).
            if ch.kind is not ChangeKind.RUN_STATUS or (
                ch.to_status not in TERMINAL_STATUSES and ch.from_status is not None
            ):
                continue
            candidates = {a.key: a for a in self.alerts.for_monitor(ch.provider, ch.monitor_id)}
            candidates.update(touched)
            for key, alert in candidates.items():
                if key in matched or key in completed:
                    continue
                rule = self._rule(alert.rule)
                flaps = (
                    rule is not None and rule.lifecycle is not None and rule.lifecycle.flapping is not None
                )
                resolving = resolves(alert, ch)
                if resolving or (flaps and completes_group(alert, ch)):
                    completed[key] = (ch, resolving)
                    touched[key] = alert
        updates: list[AlertUpdate] = []
        for key, alert in touched.items():
            bad = matched.get(key)
            good, resolving = completed.get(key, (None, False))
            result = self._settle(alert, bad, good, resolving, fired.get(key), now, kept)
            updates.append(AlertUpdate(key, result))
        batch.decisions = kept
        batch.alert_updates = updates

    def _settle(
        self,
        alert: OpenAlert,
        bad: Change | None,
        good: Change | None,
        resolving: bool,
        fired: Decision | None,
        now: float,
        out: list[Decision],
    ) -> OpenAlert | None:
        """One alert after this batch: flap damping first (it may silence the rest), then the fire and
        the resolve; the notifications go to ``out``. None: the alert closed and keeps nothing."""
        rule = self._rule(alert.rule)
        spec = rule.lifecycle if rule is not None else None
        change = bad or good
        started = False
        if rule is not None and spec is not None and spec.flapping is not None and change is not None:
            alert, started = observe(alert, BAD if bad else GOOD, change, now, spec.flapping)
        if started and rule is not None and change is not None:
            alert = replace(alert, pending=[], dropped=0, next_flush_at=None, held=[])
            decision = _prefixed(rule.decide(change, flapping="true"), "[flapping]")
            out.append(decision)
            self.metrics.alert_transitions.labels("flapping").inc()
            log.info("alert.flapping", rule=alert.rule, group=alert.group, alternations=len(alert.flips))
        elif alert.flapping:  # damped: what the storm would have sent is not sent
            alert = replace(alert, pending=[], dropped=0, next_flush_at=None, held=[])
        elif fired is not None and spec is not None and not spec.grouped():
            out.append(fired)
            alert.last = [a.stored() for a in alerts_for(fired)]
        if fired is not None and not alert.flapping:  # grouped: it opened; the group sends it later
            self.metrics.alert_transitions.labels("fired").inc()
            log.info("alert.fired", rule=alert.rule, group=alert.group)
        if not (resolving and good is not None):
            return alert
        log.info("alert.resolved", rule=alert.rule, group=alert.group, run_id=good.run_id)
        if not alert.flapping:
            self.metrics.alert_transitions.labels("resolved").inc()
        if not alert.flapping and rule is not None and spec is not None and spec.send_resolved:
            decision = rule.decide(replace(good, resolved=True))
            if rule.title is None:
                decision = replace(decision, title=f"[resolved] {decision.title}")
            if alert.pending:  # the group's firing notification is not sent yet: this one follows it
                alert = replace(alert, held=[*alert.held, *(a.stored() for a in alerts_for(decision))])
            else:
                out.append(decision)
        return close(alert)

    def end_outage(self, change: Change) -> tuple[list[Decision], list[AlertUpdate]]:
        """A provider polls again: its ``source.error`` alerts close (resolved notifications if asked)."""
        decisions: list[Decision] = []
        updates: list[AlertUpdate] = []
        for alert in list(self.alerts.for_monitor(change.provider, "")):
            if (
                not alert.firing
                or not alert.last
                or alert.last[0].get("type") != ChangeKind.SOURCE_ERROR.value
            ):
                continue
            updates.append(AlertUpdate(alert.key, None))
            self.metrics.alert_transitions.labels("resolved").inc()
            log.info("alert.resolved", rule=alert.rule, group=alert.group, reason="provider polls again")
            rule = self._rule(alert.rule)
            if rule is not None and rule.lifecycle is not None and rule.lifecycle.send_resolved:
                decision = rule.decide(change)
                if rule.title is None:
                    decision = replace(decision, title=f"[resolved] {decision.title}")
                decisions.append(decision)
        return decisions, updates

    def tick(self, now: float) -> tuple[list[Notification], list[AlertUpdate]]:
        """What time alone decides: groups that are due, flapping that ended, repeats that are due, and
        pending alerts whose window passed."""
        notes: list[Notification] = []
        updates: list[AlertUpdate] = []
        for alert in list(self.alerts.open.values()):
            rule = self._rule(alert.rule)
            spec = rule.lifecycle if rule is not None else None
            if rule is None or spec is None:
                updates.append(AlertUpdate(alert.key, None))  # the rule is gone (reload): so is its alert
                continue
            a = alert
            if flapping_ended(a, now):
                a = self._flapping_ended(a, rule, spec, now, notes)
            if flush_due(a, now):
                a = self._flush(a, rule, spec, now, notes)
            if (
                a.firing and not a.flapping and a.last and spec.repeat_interval
                and a.next_repeat_at is not None and a.next_repeat_at <= now
            ):  # fmt: skip
                sent, a = repeat_alerts(a, now, spec.repeat_interval)
                notes.extend(Notification(x) for x in sent)
                self.metrics.alert_transitions.labels("repeated").inc()
                log.info("alert.repeated", rule=a.rule, group=a.group, repeats=a.repeats)
            a = forget_flips(a, now, spec.flapping)
            if not a.firing and not a.keeps_state():
                th = spec.threshold
                if th is None or all(t <= now - th.within for t in a.matches):
                    updates.append(AlertUpdate(a.key, None))
                    continue
            if a != alert:
                updates.append(AlertUpdate(a.key, a))
        return notes, updates

    def _flush(
        self, a: OpenAlert, rule: Rule, spec: LifecycleSpec, now: float, notes: list[Notification]
    ) -> OpenAlert:
        """A group is due: one notification listing what it collected (then the resolved ones held)."""
        due = a.next_flush_at
        if a.pending:
            changes = tuple(change_from_data(p) for p in a.pending)
            decision = rule.decide(changes[0], group=changes, more=a.dropped)
            sent = [
                replace(x, detected_at=now)
                for x in alerts_for(decision, key=f"group:{a.key}:{due}:{changes[0].key}")
            ]
            notes.extend(Notification(x) for x in sent)
            notes.extend(Notification(Alert.from_payload(h)) for h in a.held)
            if a.firing:
                a = replace(a, last=[x.stored() for x in sent])
                if spec.repeat_interval:
                    a.next_repeat_at = now + spec.repeat_interval
            self.metrics.alert_transitions.labels("grouped").inc()
            log.info("alert.grouped", rule=a.rule, group=a.group, changes=len(changes) + a.dropped)
        return flushed(a, now, spec.interval())

    def _flapping_ended(
        self, a: OpenAlert, rule: Rule, spec: LifecycleSpec, now: float, notes: list[Notification]
    ) -> OpenAlert:
        """Quiet long enough: still failing fires again; completed closes (resolved if the rule asks)."""
        until = a.flapping_until
        a = replace(a, flapping_until=None, flips=[])
        self.metrics.alert_transitions.labels("flapping_ended").inc()
        log.info("alert.flapping_ended", rule=a.rule, group=a.group, firing=a.firing)
        if a.last_change is None:
            return a
        change = change_from_data(a.last_change)
        key = f"flapping-ended:{a.key}:{until}"
        if a.firing:
            decision = _prefixed(rule.decide(change, flapping="ended"), "[flapping ended]")
            sent = [replace(x, detected_at=now) for x in alerts_for(decision, key=key)]
            notes.extend(Notification(x) for x in sent)
            a = replace(a, last=[x.stored() for x in sent], opened_at=now, repeats=0)
            a.next_repeat_at = now + spec.repeat_interval if spec.repeat_interval else None
        elif spec.send_resolved:
            decision = _prefixed(
                rule.decide(replace(change, resolved=True), flapping="ended"), "[flapping ended]"
            )
            notes.extend(Notification(replace(x, detected_at=now)) for x in alerts_for(decision, key=key))
        return a


class Record:
    """Mark everything seen and queue what was decided, atomically; then wake the senders."""

    def __init__(self, recorder: Recorder, wake: Callable[[set[str]], None]) -> None:
        self.recorder = recorder
        self.wake = wake

    def __call__(self, batch: Batch) -> None:
        notes = [Notification(alert) for d in batch.decisions for alert in alerts_for(d)]
        src = batch.source
        queued = self.recorder.record(
            src.provider,
            src.snapshots,
            notes,
            batch.now,
            monitor_id=src.monitor_id,
            retired=src.retired,
            alert_updates=batch.alert_updates,
            monitor_updates=batch.monitor_updates,
            baselined=batch.monitors_baselined,
        )
        if queued:
            self.wake({n.channel for n in notes})


Stage = Callable[[Batch], None]


class Pipeline:
    def __init__(self, stages: Sequence[Stage], clock: Clock) -> None:
        self.stages = list(stages)
        self.clock = clock

    async def __call__(self, source_batch: MonitorBatch) -> None:
        batch = Batch(source_batch, self.clock.now())
        for stage in self.stages:
            stage(batch)
