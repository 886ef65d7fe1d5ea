"""The alert lifecycle: an alert that opens, stays open while its condition holds, repeats at a pace,
and resolves once (Alertmanager's model, adapted to monitor runs). Opt-in per rule.

A rule with none of ``group_by``, ``threshold``, ``repeat_interval``, ``send_resolved``,
``group_wait``, ``group_interval``, ``flapping`` behaves as it always did: one notification per
matching change. With any of them, a match belongs to an **alert**,
identified by the rule and the values of its ``group_by`` labels (default: provider, monitor_id):

- the first match opens it and notifies (or, with ``threshold: {count, within}``, the match that makes
  ``count`` within ``within``); later matches while it is open do not notify again;
- ``repeat_interval``: while open, it is notified again at that pace (by the daemon's clock, not on
  every poll), counted from when its last notifications left the outbox (sent, or given up): a
  notification delayed (a channel retrying, a restart between deciding and sending) delays its repeat,
  which never reaches a receiver sooner than ``repeat_interval`` after the one before it;
- it resolves when a run of its group completes (a ``run.status`` change to ``completed`` the rule
  itself does not match); ``send_resolved: true`` then sends one resolved notification;
- ``group_wait``/``group_interval`` and ``flapping`` change when and how often it notifies (grouped
  notifications, flap damping): see :mod:`runwatch.pipeline.grouping`. Their state lives in the same row.

Open alerts live in the state (:class:`runwatch.store.interfaces.Alerts`) and every change to them
is recorded in the same transaction as the change that caused it, so a restart or ``kill -9`` keeps
the lifecycle where it was: no re-fire, no lost resolve, no repeat sent early.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import TERMINAL_STATUSES, Alert, Change, ChangeKind, notification_id
from runwatch.pipeline.chain import Batch
from runwatch.pipeline.grouping import (
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
from runwatch.pipeline.match import alerts_for, prefixed_decision
from runwatch.rules import Decision, Rule, RuleSet
from runwatch.rules.lifecycle_spec import LifecycleSpec
from runwatch.store.alert_state import AlertUpdate, OpenAlert
from runwatch.store.interfaces import Alerts, Notification, Outbox

log = get_logger(__name__)

DEFAULT_GROUP_BY: tuple[str, ...] = ("provider", "monitor_id")


def labels_of(change: Change, rule_labels: Mapping[str, str]) -> dict[str, str]:
    ev = change.event
    return {
        **dict(rule_labels),
        "provider": change.provider,
        "monitor_id": change.monitor_id,
        "run_id": change.run_id,
        "kind": change.kind.value,
        "event": ev.name if ev else "",
        "to": change.to_status or "",
    }


def alert_key(rule: str, group: Mapping[str, str]) -> str:
    return f"{rule}|{json.dumps(sorted(group.items()))}"


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """A rule's lifecycle settings, as the stage uses them."""

    name: str
    spec: LifecycleSpec
    labels: Mapping[str, str]

    def group(self, change: Change) -> dict[str, str]:
        labels = labels_of(change, self.labels)
        return {k: labels.get(k, "") for k in (self.spec.group_by or DEFAULT_GROUP_BY)}


def decide_match(
    alert: OpenAlert | None, rule: LifecycleRule, change: Change, now: float
) -> tuple[OpenAlert, bool]:
    """The alert after one more match, and whether this match notifies (it opened the alert)."""
    group = rule.group(change)
    a = replace(alert) if alert else OpenAlert(alert_key(rule.name, group), rule.name, group)
    if a.firing:
        return a, False
    th = rule.spec.threshold
    if th is not None:
        a.matches = [t for t in a.matches if t > now - th.within] + [now]
        if len(a.matches) < th.count:
            return a, False
    a.firing = True
    a.opened_at = now
    a.matches = []
    if rule.spec.repeat_interval and not rule.spec.grouped():  # grouped: counted from each send
        a.next_repeat_at = now + rule.spec.repeat_interval
    return a, True


def close(alert: OpenAlert) -> OpenAlert | None:
    """The alert after it resolved: gone, unless its group or flap history must outlive it."""
    if not alert.keeps_state():
        return None
    return replace(alert, firing=False, opened_at=None, matches=[], next_repeat_at=None, repeats=0)


def completes_group(alert: OpenAlert, change: Change) -> bool:
    """A run of the alert's group completed (flap damping's "good" outcome, firing or not)."""
    if change.kind is not ChangeKind.RUN_STATUS or change.to_status != "completed":
        return False
    labels = labels_of(change, {})
    return all(labels.get(k, v) == v for k, v in alert.group.items() if k in ("provider", "monitor_id"))


def resolves(alert: OpenAlert, change: Change) -> bool:
    """The condition no longer holds: a stuck run ended, a missed run's monitor ran again, or a later
    run of the alert's group completed."""
    if not alert.firing or change.kind is not ChangeKind.RUN_STATUS:
        return False
    kind = alert.last[0].get("type") if alert.last else None
    if kind == ChangeKind.MONITOR_MISSED_RUN.value:
        # A run of the monitor showed up (first seen): the schedule runs again.
        return change.from_status is None and any(
            p.get("provider") == change.provider and p.get("monitor_id") == change.monitor_id
            for p in alert.last
        )
    if kind == ChangeKind.RUN_STUCK.value:
        return change.to_status in TERMINAL_STATUSES and any(
            p.get("run_id") == change.run_id for p in alert.last
        )
    if kind == ChangeKind.SOURCE_ERROR.value or change.to_status != "completed":
        return False
    labels = labels_of(change, {})
    return all(labels.get(k, v) == v for k, v in alert.group.items() if k in ("provider", "monitor_id"))


def repeat_alerts(alert: OpenAlert, now: float, interval: float) -> tuple[list[Alert], OpenAlert]:
    """The notifications a due repeat sends (the last ones again, with ids of their own)."""
    n = alert.repeats + 1
    out = [
        replace(
            Alert.from_payload(p),
            id=notification_id(f"{alert.key}|{alert.opened_at}", f"repeat{n}", str(p.get("channel"))),
            detected_at=now,
        )
        for p in alert.last
    ]
    return out, replace(alert, repeats=n, next_repeat_at=now + interval)


def repeat_due_at(alert: OpenAlert, finished: Mapping[str, float | None], interval: float) -> float | None:
    """When the alert's repeat is due: ``interval`` after the last of its last notifications left the
    outbox (``finished``: the outbox's answer), never before ``next_repeat_at`` (``interval`` after
    they were decided); None while one of them is still pending. One the outbox no longer holds
    (retention) counts from its decision."""
    due = alert.next_repeat_at
    if due is None:
        return None
    for p in alert.last:
        nid = str(p.get("id"))
        if nid not in finished:
            continue
        at = finished[nid]
        if at is None:
            return None
        due = max(due, at + interval)
    return due


class Lifecycle:
    """For rules with lifecycle keys: a match opens an alert (notify) or finds it open (quiet); a run
    of its monitor completing closes it (a resolved notification if the rule asks). With grouping,
    matches are collected and sent by :meth:`tick`; with flap damping, a group alternating too often
    is reported once as flapping and then kept quiet. Rules without those keys pass through untouched.
    The alert changes go to Record, into the same transaction.

    ``sent`` is the outbox the notifications go to: a repeat counts from when the last ones left it.
    Without one (``runwatch test-rules``, which sends nothing) a notification counts as sent when
    decided."""

    def __init__(
        self,
        alerts: Alerts,
        rules: Callable[[], RuleSet],
        metrics: Metrics,
        *,
        sent: Outbox | None = None,
    ) -> None:
        self.alerts = alerts
        self.rules = rules
        self.metrics = metrics
        self.sent = sent
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
            decision = prefixed_decision(rule.decide(change, flapping="true"), "[flapping]")
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

    def tick(
        self, now: float, providers: Collection[str] | None = None
    ) -> tuple[list[Notification], list[AlertUpdate]]:
        """What time alone decides: groups that are due, flapping that ended, repeats that are due, and
        pending alerts whose window passed. ``providers``: only the alerts whose group names one of
        them (``""``: no provider); with several instances, each ticks the alerts of what it leads."""
        notes: list[Notification] = []
        updates: list[AlertUpdate] = []
        finished = self._finished(now)
        for alert in list(self.alerts.open.values()):
            if providers is not None and alert.group.get("provider", "") not in providers:
                continue
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
                due = repeat_due_at(a, finished, spec.repeat_interval)
                if due is None:
                    pass  # the last notification is still pending: its repeat waits for it
                elif due > now:  # it left the outbox late: due that long after, kept as state
                    a = replace(a, next_repeat_at=due)
                else:
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

    def _finished(self, now: float) -> dict[str, float | None]:
        """When the last notifications of the alerts whose repeat may be due left the outbox (one
        query for all of them; none without an outbox: each counts as sent when decided)."""
        if self.sent is None:
            return {}
        ids = [
            str(p.get("id"))
            for a in self.alerts.open.values()
            if a.firing and a.next_repeat_at is not None and a.next_repeat_at <= now
            for p in a.last
        ]
        return self.sent.finished_at(ids) if ids else {}

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
            decision = prefixed_decision(rule.decide(change, flapping="ended"), "[flapping ended]")
            sent = [replace(x, detected_at=now) for x in alerts_for(decision, key=key)]
            notes.extend(Notification(x) for x in sent)
            a = replace(a, last=[x.stored() for x in sent], opened_at=now, repeats=0)
            a.next_repeat_at = now + spec.repeat_interval if spec.repeat_interval else None
        elif spec.send_resolved:
            decision = prefixed_decision(
                rule.decide(replace(change, resolved=True), flapping="ended"), "[flapping ended]"
            )
            notes.extend(Notification(replace(x, detected_at=now)) for x in alerts_for(decision, key=key))
        return a
