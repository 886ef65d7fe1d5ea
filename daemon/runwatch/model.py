"""The provider-neutral model every stage after a source speaks.

A source turns what an API returned into :class:`RunSnapshot` objects; :mod:`runwatch.state` diffs a
snapshot against what was recorded and yields :class:`Change` objects; rules match changes. Nothing
downstream of a source knows an API's field names, except through ``raw`` (for templates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Provider(StrEnum):
    EXA = "exa"
    OLOSTEP = "olostep"


class ChangeKind(StrEnum):
    RUN_STATUS = "run.status"
    RUN_EVENT = "run.event"


#: Run statuses a rule may name. ``unknown`` stands for a status string the provider sent that we do
#: not know yet: it is tracked and shown, but never treated as terminal.
RUN_STATUSES: tuple[str, ...] = ("created", "running", "completed", "failed", "canceled")
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "canceled"})
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")


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
        }
