"""The alert lifecycle: an alert that opens, stays open while its condition holds, repeats at a pace,
and resolves once (Alertmanager's model, adapted to monitor runs). Opt-in per rule.

A rule with none of ``group_by``, ``threshold``, ``repeat_interval``, ``send_resolved`` behaves as it
always did: one notification per matching change. With any of them, a match belongs to an **alert**,
identified by the rule and the values of its ``group_by`` labels (default: provider, monitor_id):

- the first match opens it and notifies (or, with ``threshold: {count, within}``, the match that makes
  ``count`` within ``within``); later matches while it is open do not notify again;
- ``repeat_interval``: while open, it is notified again at that pace (by the daemon's clock, not on
  every poll);
- it resolves when a run of its group completes (a ``run.status`` change to ``completed`` the rule
  itself does not match); ``send_resolved: true`` then sends one resolved notification.

Open alerts live in the state (:class:`runwatch.store.alerts.SqliteAlerts`) and every change to them
is recorded in the same transaction as the change that caused it, so a restart or ``kill -9`` keeps
the lifecycle where it was: no re-fire, no lost resolve, no repeat sent early.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from runwatch.durations import Duration
from runwatch.log import get_logger
from runwatch.model import TERMINAL_STATUSES, Alert, Change, ChangeKind, notification_id

log = get_logger(__name__)

#: Labels a ``group_by`` may name (besides the rule's own labels).
GROUP_LABELS: tuple[str, ...] = ("provider", "monitor_id", "run_id", "kind", "event", "to")
DEFAULT_GROUP_BY: tuple[str, ...] = ("provider", "monitor_id")


class Threshold(BaseModel):
    """Fire only when the rule matched ``count`` times within ``within``."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, description="Matches needed to fire.")
    within: Duration = Field(description="The window the matches must fall in (e.g. 24h).")


class LifecycleSpec(BaseModel):
    """The rule keys that turn a rule's matches into an alert with a lifecycle (all optional)."""

    model_config = ConfigDict(extra="forbid")

    group_by: list[str] | None = Field(
        None, description="Labels that identify one alert of this rule (default: provider, monitor_id)."
    )
    threshold: Threshold | None = Field(None, description="Fire only after count matches within a window.")
    repeat_interval: Duration | None = Field(None, description="Re-send an alert still open at this pace.")
    send_resolved: StrictBool = Field(False, description="Send one resolved notification when it closes.")

    def used(self) -> bool:
        return bool(self.group_by or self.threshold or self.repeat_interval or self.send_resolved)


@dataclass(slots=True)
class OpenAlert:
    """One alert of one rule and group, pending (below its threshold) or firing."""

    key: str
    rule: str
    group: dict[str, str]
    firing: bool = False
    opened_at: float | None = None
    matches: list[float] = field(default_factory=list)
    next_repeat_at: float | None = None
    repeats: int = 0
    #: The notifications it last sent (one per channel), as data: what a repeat re-sends.
    last: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "rule": self.rule, "group": self.group, "firing": self.firing, "opened_at": self.opened_at,
                "matches": self.matches, "next_repeat_at": self.next_repeat_at, "repeats": self.repeats,
                "last": self.last,
            }
        )  # fmt: skip

    @classmethod
    def from_json(cls, key: str, text: str) -> OpenAlert:
        d = json.loads(text)
        return cls(
            key, d["rule"], d["group"], d["firing"], d["opened_at"], d["matches"], d["next_repeat_at"],
            d["repeats"], d["last"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """What a batch or a tick did to one alert: the new state, or None when it closed."""

    key: str
    alert: OpenAlert | None


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
    if rule.spec.repeat_interval:
        a.next_repeat_at = now + rule.spec.repeat_interval
    return a, True


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
