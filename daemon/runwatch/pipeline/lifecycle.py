"""The alert lifecycle: an alert that opens, stays open while its condition holds, repeats at a pace,
and resolves once (Alertmanager's model, adapted to monitor runs). Opt-in per rule.

A rule with none of ``group_by``, ``threshold``, ``repeat_interval``, ``send_resolved``,
``group_wait``, ``group_interval``, ``flapping`` behaves as it always did: one notification per
matching change. With any of them, a match belongs to an **alert**,
identified by the rule and the values of its ``group_by`` labels (default: provider, monitor_id):

- the first match opens it and notifies (or, with ``threshold: {count, within}``, the match that makes
  ``count`` within ``within``); later matches while it is open do not notify again;
- ``repeat_interval``: while open, it is notified again at that pace (by the daemon's clock, not on
  every poll);
- it resolves when a run of its group completes (a ``run.status`` change to ``completed`` the rule
  itself does not match); ``send_resolved: true`` then sends one resolved notification;
- ``group_wait``/``group_interval`` and ``flapping`` change when and how often it notifies (grouped
  notifications, flap damping): see :mod:`runwatch.grouping`. Their state lives in the same row.

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
#: ``group_wait`` when only ``group_interval`` is given, and the reverse (Alertmanager's defaults).
DEFAULT_GROUP_WAIT = 30.0
DEFAULT_GROUP_INTERVAL = 300.0
#: ``flapping.count`` when not given: more than this many alternations within ``within`` is flapping.
DEFAULT_FLAP_COUNT = 4


class Threshold(BaseModel):
    """Fire only when the rule matched ``count`` times within ``within``."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, description="Matches needed to fire.")
    within: Duration = Field(description="The window the matches must fall in (e.g. 24h).")


class Flapping(BaseModel):
    """Flap damping: a group alternating between matching and completing is reported once as flapping."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(
        DEFAULT_FLAP_COUNT,
        ge=1,
        description="Flapping once the group alternated more than this many times within `within`.",
    )
    within: Duration = Field(description="The window the alternations are counted in (e.g. 1h).")
    quiet: Duration | None = Field(
        None, description="Flapping ends after this long with no alternation (default: `within`)."
    )

    def quiet_for(self) -> float:
        return self.quiet if self.quiet is not None else self.within


class LifecycleSpec(BaseModel):
    """The rule keys that turn a rule's matches into an alert with a lifecycle (all optional)."""

    model_config = ConfigDict(extra="forbid")

    group_by: list[str] | None = Field(
        None, description="Labels that identify one alert of this rule (default: provider, monitor_id)."
    )
    threshold: Threshold | None = Field(None, description="Fire only after count matches within a window.")
    repeat_interval: Duration | None = Field(None, description="Re-send an alert still open at this pace.")
    send_resolved: StrictBool = Field(False, description="Send one resolved notification when it closes.")
    group_wait: Duration | None = Field(None, description="Collect a new group's matches this long.")
    group_interval: Duration | None = Field(None, description="Send a group's later matches at this pace.")
    flapping: Flapping | None = Field(None, description="Report a flapping group once, not as a storm.")

    def used(self) -> bool:
        return bool(
            self.group_by or self.threshold or self.repeat_interval or self.send_resolved
            or self.grouped() or self.flapping
        )  # fmt: skip

    def grouped(self) -> bool:
        """Matches are collected and sent as one notification (``group_wait``/``group_interval``)."""
        return self.group_wait is not None or self.group_interval is not None

    def wait(self) -> float:
        return self.group_wait if self.group_wait is not None else DEFAULT_GROUP_WAIT

    def interval(self) -> float:
        return self.group_interval if self.group_interval is not None else DEFAULT_GROUP_INTERVAL


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
    # -- grouping (group_wait / group_interval) --
    #: The matches collected for the group's next notification (changes as data, oldest first).
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: Matches beyond :data:`MAX_GROUP_ITEMS` since the last flush: counted, not listed.
    dropped: int = 0
    #: When the group is sent next (None: no group open; the next match starts one).
    next_flush_at: float | None = None
    #: Resolved notifications (payloads) held until the pending group is sent, so they arrive after it.
    held: list[dict[str, Any]] = field(default_factory=list)
    # -- flap damping --
    #: ``bad`` (the rule matched) or ``good`` (a run of the group completed), as last seen.
    outcome: str | None = None
    #: When the group alternated between the two, within the rule's ``flapping.within``.
    flips: list[float] = field(default_factory=list)
    #: While flapping: when it ends unless the group alternates again before.
    flapping_until: float | None = None
    #: The group's latest change as data: what the flapping-ended notification is rendered from.
    last_change: dict[str, Any] | None = None

    @property
    def flapping(self) -> bool:
        return self.flapping_until is not None

    def keeps_state(self) -> bool:
        """A closed alert stays in the state while its group or its flap history still matter."""
        return bool(
            self.pending or self.held or self.next_flush_at is not None or self.flapping or self.flips
        )

    def next_due(self) -> float | None:
        """The next time the clock alone decides something about it (a flush, a repeat, flapping's end)."""
        times = [t for t in (self.next_flush_at, self.flapping_until) if t is not None]
        if self.firing and self.next_repeat_at is not None and self.last and not self.flapping:
            times.append(self.next_repeat_at)
        return min(times, default=None)

    def to_json(self) -> str:
        return json.dumps(
            {
                "rule": self.rule, "group": self.group, "firing": self.firing, "opened_at": self.opened_at,
                "matches": self.matches, "next_repeat_at": self.next_repeat_at, "repeats": self.repeats,
                "last": self.last, "pending": self.pending, "dropped": self.dropped,
                "next_flush_at": self.next_flush_at, "held": self.held, "outcome": self.outcome,
                "flips": self.flips, "flapping_until": self.flapping_until, "last_change": self.last_change,
            }
        )  # fmt: skip

    @classmethod
    def from_json(cls, key: str, text: str) -> OpenAlert:
        """Also reads rows written before grouping and flap damping (their keys absent)."""
        d = json.loads(text)
        return cls(
            key, d["rule"], d["group"], d["firing"], d["opened_at"], d["matches"], d["next_repeat_at"],
            d["repeats"], d["last"], d.get("pending") or [], int(d.get("dropped") or 0),
            d.get("next_flush_at"), d.get("held") or [], d.get("outcome"), d.get("flips") or [],
            d.get("flapping_until"), d.get("last_change"),
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
