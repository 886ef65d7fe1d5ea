"""An open alert as the state keeps it: one row per rule and group, with what its grouping, repeats
and flap damping still need. The pipeline's lifecycle stage changes it; the store only keeps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
