"""The provider-neutral model every stage after a source speaks.

A source turns what an API returned into :class:`RunSnapshot` objects; :mod:`runwatch.pipeline.detect` diffs a
snapshot against what was recorded and yields :class:`Change` objects; rules match changes. Nothing
downstream of a source knows an API's field names, except through ``raw`` (for templates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class ChangeKind(StrEnum):
    """What a change is about: a run's status, a step a run logged, or the provider itself."""

    RUN_STATUS = "run.status"
    RUN_EVENT = "run.event"
    #: A run still not finished a while (the rule's ``stuck_after``) after it was created.
    RUN_STUCK = "run.stuck"
    #: A provider could not be polled (auth refused, 5xx, timeouts, unusable answers) for a while.
    SOURCE_ERROR = "source.error"
    #: The monitor itself changed state (enabled/disabled, active/paused/failed/deleted), appeared in
    #: or disappeared from the provider's listing.
    MONITOR_STATUS = "monitor.status"
    #: A scheduled run did not appear within the rule's ``grace`` of its due time.
    MONITOR_MISSED_RUN = "monitor.missed_run"


#: Run statuses a rule may name. ``unknown`` stands for a status string the provider sent that we do
#: not know yet: it is tracked and shown, but never treated as terminal.
RUN_STATUSES: tuple[str, ...] = ("created", "running", "completed", "failed", "canceled")
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "canceled"})
#: Monitor statuses a ``monitor.status`` change carries in ``from``/``to``: Exa's enabled/disabled,
#: Olostep's provisioning/active/paused/failed/deleted. A monitor that disappeared from the listing
#: goes to ``deleted``; one that appeared comes from nothing (``from`` empty).
MONITOR_STATUSES: tuple[str, ...] = (
    "enabled", "disabled", "provisioning", "active", "paused", "failed", "deleted",
)  # fmt: skip
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")

#: The most an alert keeps of any one value from a provider: a string (in ``run``, the step's
#: ``message``, ``failed_reason``, the step name) is cut to this many characters, the last of them a
#: marker ``…[cut: N more characters]``; an object or a list in ``run`` keeps, in order, the entries
#: that fit in about this many characters of JSON and ends with one saying how many it left out
#: (``"…": "[cut: N more keys]"``, ``"…[cut: N more items]"``).
VALUE_LIMIT = 4096
#: About the most an alert keeps of a whole run, in characters of JSON (cut the same way).
RUN_LIMIT = 16384
#: The key a cut object gets for what it left out.
CUT_KEY = "…"
#: Deeper than this, a value is left out: ``"…[cut: nested too deep]"``.
_DEPTH_LIMIT = 32
_KEY_LIMIT = 256
#: Room kept in a cut object or list for its marker entry; and the least room an entry is given (an
#: object or a list stops, with its marker, rather than keep a sliver of its next entry).
_MARK_ROOM = 48
_LEFT_MIN = 64


def cut_text(text: str, limit: int = VALUE_LIMIT) -> str:
    """``text`` within ``limit`` characters; a longer one keeps its start and ends with a marker saying
    how many characters it lost (the marker counts in ``limit``, so cutting again changes nothing)."""
    if len(text) <= limit:
        return text
    room = limit - len(f"…[cut: {len(text)} more characters]")
    if room <= 0:
        return "…"[:limit]
    return f"{text[:room]}…[cut: {len(text) - room} more characters]"


#: The last values bounded (a run, a step's raw event, ...) and what was kept of them, by identity.
_recent: dict[tuple[int, int], tuple[Any, Any]] = {}
_RECENT_KEPT = 8


def bounded(value: Any, budget: int = RUN_LIMIT) -> Any:
    """A provider's JSON value (a run) as an alert keeps it: each value in it within
    :data:`VALUE_LIMIT`, the whole within about ``budget`` characters of JSON (:data:`RUN_LIMIT`).

    An alert is stored in the state and sent for every notification about a run, so what a run holds
    (a large ``snapshot``, a long text) must not be copied whole into each of them; and one large
    field must not crowd out the small ones after it (``status``, ``failedReason``). A value that is
    within bounds is returned as it is (not copied), so bounding a bounded value (a group's change
    read back from the state) changes nothing. Only what is kept is visited, and the changes of one
    poll share their run, so the last few bounded are remembered: a run's 3,000 steps bound it once.
    """
    seen = _recent.get((id(value), budget))
    if seen is not None and seen[0] is value:
        return seen[1]
    out = _bounded(value, budget, 0)[0]
    if len(_recent) >= _RECENT_KEPT:
        _recent.clear()
    _recent[(id(value), budget)] = (value, out)  # the value is held, so its id is not reused meanwhile
    return out


def _fits(value: Any, budget: int, depth: int) -> int | None:
    """The size of ``value`` if :func:`_bounded` keeps it as it is: characters of JSON, roughly (a
    string counts its characters; each entry of an object or a list adds its key and punctuation)."""
    if isinstance(value, str):
        return len(value) if len(value) <= min(VALUE_LIMIT, budget) else None
    if value is None or isinstance(value, bool | int | float):
        size = len(repr(value))
        return size if size <= budget else None
    if depth >= _DEPTH_LIMIT:
        return None
    size = 2
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > _KEY_LIMIT:
                return None
            used = _fits(item, min(budget - size - len(key) - 6, VALUE_LIMIT), depth + 1)
            if used is None:
                return None
            size += len(key) + 6 + used
        return size
    if isinstance(value, list | tuple):
        for item in value:
            used = _fits(item, min(budget - size - 3, VALUE_LIMIT), depth + 1)
            if used is None:
                return None
            size += used + 3
        return size
    return None


def _bounded(value: Any, budget: int, depth: int) -> tuple[Any, int]:
    """(``value`` within ``budget``, its size): as it is if it fits, else cut with markers."""
    size = _fits(value, budget, depth)
    if size is not None:
        return value, size
    if depth >= _DEPTH_LIMIT and isinstance(value, Mapping | list | tuple):
        return "…[cut: nested too deep]", 23
    if isinstance(value, Mapping):
        obj: dict[str, Any] = {}
        size = 2
        for i, (key, item) in enumerate(value.items()):
            name = cut_text(str(key), _KEY_LIMIT)
            room = min(budget - size - len(name) - 6 - _MARK_ROOM, VALUE_LIMIT)
            if room < _LEFT_MIN:
                mark = f"[cut: {len(value) - i} more keys]"
                obj[CUT_KEY] = mark
                return obj, size + len(CUT_KEY) + len(mark) + 6
            obj[name], used = _bounded(item, room, depth + 1)
            size += len(name) + 6 + used
        return obj, size
    if isinstance(value, list | tuple):
        items: list[Any] = []
        size = 2
        for i, item in enumerate(value):
            room = min(budget - size - 3 - _MARK_ROOM, VALUE_LIMIT)
            if room < _LEFT_MIN:
                mark = f"…[cut: {len(value) - i} more items]"
                items.append(mark)
                return items, size + len(mark) + 3
            kept, used = _bounded(item, room, depth + 1)
            items.append(kept)
            size += used + 3
        return items, size
    text = cut_text(value if isinstance(value, str) else str(value), max(0, min(VALUE_LIMIT, budget)))
    return text, len(text)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One step a run logged (Olostep's AgentLogEvent)."""

    id: str
    ts_ms: int
    name: str
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What a source saw of one run at one poll."""

    provider: str
    monitor_id: str
    run_id: str
    status: str
    raw: Mapping[str, Any]
    failed_reason: str | None = None
    #: Unix seconds when the run finished, if the provider says; used for the first-start baseline.
    finished_at: float | None = None
    #: Olostep only: every event the run has logged so far, in any order.
    events: tuple[RunEvent, ...] = ()
    #: Unix seconds when the run reached ``status``, by the provider's own clock, if it says.
    changed_at: float | None = None
    #: Unix seconds when the run was created, by the provider's own clock, if it says.
    created_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Change:
    """One thing that happened to a run, reported once.

    ``key`` is unique per change across restarts; the outbox uses it to never send the same change
    twice through the same rule and channel.
    """

    key: str
    kind: ChangeKind
    provider: str
    monitor_id: str
    run_id: str
    run: Mapping[str, Any]
    from_status: str | None = None
    to_status: str | None = None
    event: RunEvent | None = None
    failed_reason: str | None = None
    #: Unix seconds when runwatch detected the change (for detection-to-send latency).
    detected_at: float = 0.0
    #: Unix seconds when it happened by the provider's own timestamps, if it gives them.
    occurred_at: float | None = None
    #: True for the change that closed an open alert (the rule's ``send_resolved`` notification).
    resolved: bool = False
    #: ``source.error``: how long the provider has been failing; ``run.stuck``: how long the run has
    #: been unfinished since it was created (seconds).
    failing_for: float = 0.0
    #: The monitor as the provider's listing last showed it (raw API object; empty when not known).
    monitor: Mapping[str, Any] = field(default_factory=dict)

    def template_vars(self) -> dict[str, Any]:
        """The variables a rule's title and body templates see (see rules/README.md)."""
        ev = self.event
        return {
            "provider": self.provider,
            "monitor_id": self.monitor_id,
            "run_id": self.run_id,
            "kind": str(self.kind),
            "from": self.from_status or "",
            "to": self.to_status or "",
            "event": ev.name if ev else "",
            "message": ev.message if ev else "",
            "event_data": dict(ev.raw) if ev else {},
            "failed_reason": self.failed_reason or "",
            "run": dict(self.run),
            "monitor": dict(self.monitor),
            "resolved": self.resolved,
            "due_at": (rfc3339(self.occurred_at) or "") if self.kind is ChangeKind.MONITOR_MISSED_RUN else "",
        }

    def payload_item(self) -> dict[str, Any]:
        """This change as one item of a notification's ``alerts`` list (webhook payload), its provider
        values bounded as an alert keeps them (:func:`bounded`, :func:`cut_text`)."""
        ev = self.event
        return {
            "type": self.kind.value,
            "provider": self.provider,
            "monitor_id": self.monitor_id,
            "run_id": self.run_id,
            "from": self.from_status,
            "to": self.to_status,
            "event": cut_text(ev.name) if ev else None,
            "message": cut_text(ev.message) if ev else None,
            "failed_reason": cut_text(self.failed_reason) if self.failed_reason is not None else None,
            "occurred_at": rfc3339(self.occurred_at if self.occurred_at is not None else self.detected_at),
            "detected_at": rfc3339(self.detected_at),
            "run": bounded(self.run),
        }


#: The version of :class:`Alert`'s serialised form (the outbox row and the webhook body).
ALERT_VERSION = 1


def notification_id(change_key: str, rule: str, channel: str) -> str:
    """The stable id of one (change, rule, channel) decision: the outbox key and the ``webhook-id``.

    A hash, so it is the same across restarts and replays and carries no provider text of unknown
    length or alphabet into HTTP headers.
    """
    digest = hashlib.sha256(f"{change_key}|{rule}|{channel}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds -> ``2026-11-30T10:46:41.123Z`` (UTC, milliseconds)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Alert:
    """One decided notification for one channel, kept as data in the outbox.

    Every channel kind renders from this (apprise sends ``title``/``body``; the webhook kind sends
    :meth:`payload`); a grouped one lists its changes in ``alerts``. Its serialised form is versioned
    (:data:`ALERT_VERSION`) and is the webhook body of ``schemas/webhook-v1.json``.

    It is stored once per notification, so what it holds from the provider is bounded when the pipeline
    makes it: ``run`` within :data:`RUN_LIMIT` (:func:`bounded`; an Olostep run without its event list,
    see :func:`runwatch.sources.olostep.derive`), and no one value longer than :data:`VALUE_LIMIT`.
    """

    id: str
    type: str
    channel: str
    provider: str
    monitor_id: str
    run_id: str
    rule: str
    severity: str
    title: str
    body: str
    detected_at: float
    occurred_at: float
    from_status: str | None = None
    to_status: str | None = None
    event: str | None = None
    message: str | None = None
    failed_reason: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    #: How ``body`` is written: text, markdown or html (the rule's ``format``).
    format: str = "text"
    #: ``firing``, or ``resolved`` for the notification that an open alert closed.
    status: str = "firing"
    #: The changes it reports, as payload items (:meth:`Change.payload_item`): several for a grouped
    #: notification; empty means the one change described by the fields above.
    alerts: tuple[Mapping[str, Any], ...] = ()

    def items(self) -> list[dict[str, Any]]:
        """The ``alerts`` list of the payload: always at least the one change it is about."""
        if self.alerts:
            return [dict(a) for a in self.alerts]
        return [{k: v for k, v in self.payload().items() if k in _ITEM_KEYS}]

    def payload(self) -> dict[str, Any]:
        """The JSON object a webhook receives (schema version 1; later versions only add fields)."""
        out: dict[str, Any] = {
            "type": self.type,
            "id": self.id,
            "version": ALERT_VERSION,
            "provider": self.provider,
            "monitor_id": self.monitor_id,
            "run_id": self.run_id,
            "from": self.from_status,
            "to": self.to_status,
            "event": self.event,
            "message": self.message,
            "failed_reason": self.failed_reason,
            "occurred_at": rfc3339(self.occurred_at),
            "detected_at": rfc3339(self.detected_at),
            "rule": self.rule,
            "severity": self.severity,
            "labels": dict(self.labels),
            "title": self.title,
            "body": self.body,
            "format": self.format,
            "status": self.status,
            "channel": self.channel,
            "run": dict(self.run),
        }
        # One change: its item is the fields above (built once, not a second time with new dates).
        out["alerts"] = [dict(a) for a in self.alerts] or [{k: out[k] for k in _ITEM_KEYS}]
        return out

    def stored(self) -> dict[str, Any]:
        """What the state keeps (the outbox row, an open alert's last notifications): the payload,
        without the ``alerts`` list when it would only repeat the one change the fields describe
        (:meth:`payload` rebuilds it), so a row is not twice its size."""
        data = self.payload()
        if not self.alerts:
            del data["alerts"]
        return data

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Alert:
        """The inverse of :meth:`payload` and :meth:`stored`, for this and older versions (a payload
        without ``alerts`` is about its one change)."""
        alert = cls._from_fields(data)
        raw = data.get("alerts")
        if not raw:
            return alert
        items = [dict(a) for a in raw if isinstance(a, Mapping)]
        if items and items != alert.items():
            return replace(alert, alerts=tuple(items))
        return alert

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            id=str(data["id"]),
            type=str(data.get("type") or ""),
            channel=str(data.get("channel") or ""),
            provider=str(data.get("provider") or ""),
            monitor_id=str(data.get("monitor_id") or ""),
            run_id=str(data.get("run_id") or ""),
            rule=str(data.get("rule") or ""),
            severity=str(data.get("severity") or "warning"),
            title=str(data.get("title") or ""),
            body=str(data.get("body") or ""),
            detected_at=_unix(data.get("detected_at")),
            occurred_at=_unix(data.get("occurred_at")),
            from_status=data.get("from"),
            to_status=data.get("to"),
            event=data.get("event"),
            message=data.get("message"),
            failed_reason=data.get("failed_reason"),
            labels=dict(data.get("labels") or {}),
            run=dict(data.get("run") or {}),
            format=str(data.get("format") or "text"),
            status=str(data.get("status") or "firing"),
        )


#: The payload's fields that describe one change (an item of its ``alerts`` list).
_ITEM_KEYS = (
    "type", "provider", "monitor_id", "run_id", "from", "to", "event", "message", "failed_reason",
    "occurred_at", "detected_at", "run",
)  # fmt: skip


def _unix(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0
