"""Grouping (``group_wait``, ``group_interval``) and flap damping: the state kept in an open alert.

Both are Alertmanager's ideas adapted to monitor runs, and both only change *when* and *how often* an
alert of the lifecycle notifies, never what it is about:

- **grouping**: the first match of a group starts it; after ``group_wait`` one notification lists every
  match collected so far (a storm of 50 failures in 10 s is one message); later matches are collected
  and sent at most once per ``group_interval`` (nothing is sent when nothing is new). A group closes
  when a ``group_interval`` passes with nothing new: the next match starts a new one.
- **flap damping**: a group whose runs alternate between matching the rule (``bad``: a failure, for a
  rule on ``to: failed``) and completing (``good``) more than ``count`` times within ``within`` is
  flapping: one notification says so, then the group is quiet until ``quiet`` passes with no
  alternation; then one notification says the flapping ended.

The functions here are pure (an :class:`~runwatch.pipeline.lifecycle.OpenAlert` in, the changed one out); the
pipeline's Lifecycle stage calls them and records the result in the same transaction as its cause, so
a pending group or a flapping state survives ``kill -9`` like every other part of the lifecycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from runwatch.model import Change, ChangeKind, RunEvent, bounded, cut_text
from runwatch.rules.lifecycle_spec import Flapping
from runwatch.store.alert_state import OpenAlert

#: A group lists at most this many matches per notification; more are counted ("and 12 more").
MAX_GROUP_ITEMS = 1000

BAD = "bad"
GOOD = "good"


# --- changes as data (what a pending group keeps in the state) ------------------------------------------


def change_to_data(ch: Change) -> dict[str, Any]:
    """A change as JSON-able data, enough to render it again after a restart; what it holds from the
    provider is bounded as an alert keeps it (a group holds up to ``MAX_GROUP_ITEMS`` of them)."""
    ev = ch.event
    return {
        "key": ch.key, "kind": ch.kind.value, "provider": ch.provider, "monitor_id": ch.monitor_id,
        "run_id": ch.run_id, "run": bounded(ch.run), "from": ch.from_status, "to": ch.to_status,
        "event": (
            {"id": ev.id, "ts_ms": ev.ts_ms, "name": cut_text(ev.name), "message": cut_text(ev.message),
             "raw": bounded(ev.raw), "error": ev.error}
            if ev else None
        ),
        "failed_reason": ch.failed_reason, "detected_at": ch.detected_at, "occurred_at": ch.occurred_at,
        "failing_for": ch.failing_for, "monitor": dict(ch.monitor),
    }  # fmt: skip


def change_from_data(d: Mapping[str, Any]) -> Change:
    ev = d.get("event")
    return Change(
        key=str(d["key"]),
        kind=ChangeKind(d["kind"]),
        provider=str(d["provider"]),
        monitor_id=str(d["monitor_id"]),
        run_id=str(d["run_id"]),
        run=dict(d.get("run") or {}),
        from_status=d.get("from"),
        to_status=d.get("to"),
        event=(
            RunEvent(
                str(ev["id"]),
                int(ev["ts_ms"]),
                str(ev["name"]),
                str(ev["message"]),
                dict(ev.get("raw") or {}),
                ev.get("error"),
            )
            if ev
            else None
        ),
        failed_reason=d.get("failed_reason"),
        detected_at=float(d.get("detected_at") or 0.0),
        occurred_at=d.get("occurred_at"),
        failing_for=float(d.get("failing_for") or 0.0),
        monitor=dict(d.get("monitor") or {}),
    )


# --- grouping ----------------------------------------------------------------------------------------


def collect(alert: OpenAlert, change: Change, now: float, wait: float) -> OpenAlert:
    """The alert with one more match in its group; the first match of a group starts it (sent after
    ``wait``). A match already collected (the same change decided again) is not listed twice."""
    data = change_to_data(change)
    if any(p.get("key") == change.key for p in alert.pending):
        return alert
    a = replace(alert)
    if len(a.pending) < MAX_GROUP_ITEMS:
        a.pending = [*a.pending, data]
    else:
        a.dropped += 1
    if a.next_flush_at is None:
        a.next_flush_at = now + wait
    return a


def flush_due(alert: OpenAlert, now: float) -> bool:
    return alert.next_flush_at is not None and alert.next_flush_at <= now


def flushed(alert: OpenAlert, now: float, interval: float) -> OpenAlert:
    """The alert after its group's due time: what was pending is sent (the caller sends it); with
    nothing pending the group closes and the next match starts a new one (and waits again)."""
    sent = bool(alert.pending or alert.dropped)
    return replace(alert, pending=[], dropped=0, held=[], next_flush_at=(now + interval) if sent else None)


# --- default texts of a grouped notification ----------------------------------------------------------


# --- flap damping -------------------------------------------------------------------------------------


def observe(
    alert: OpenAlert, outcome: str, change: Change, now: float, spec: Flapping
) -> tuple[OpenAlert, bool]:
    """The alert after one more outcome of its group, and whether it started flapping with it."""
    a = replace(alert, last_change=change_to_data(change))
    flipped = a.outcome is not None and a.outcome != outcome
    a.outcome = outcome
    a.flips = [t for t in a.flips if t > now - spec.within]
    if not flipped:
        return a, False
    a.flips = [*a.flips, now]
    if a.flapping:
        a.flapping_until = now + spec.quiet_for()
        return a, False
    if len(a.flips) > spec.count:
        a.flapping_until = now + spec.quiet_for()
        return a, True
    return a, False


def flapping_ended(alert: OpenAlert, now: float) -> bool:
    return alert.flapping_until is not None and alert.flapping_until <= now


def forget_flips(alert: OpenAlert, now: float, spec: Flapping | None) -> OpenAlert:
    """Alternations older than the window no longer count (and no longer keep a closed alert)."""
    if not alert.flips:
        return alert
    within = spec.within if spec is not None else 0.0
    kept = [t for t in alert.flips if t > now - within]
    return alert if kept == alert.flips else replace(alert, flips=kept)
