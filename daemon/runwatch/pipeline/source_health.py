"""How long each provider has failed to poll, and the ``source.error`` changes an outage makes.

Kept apart from run failures: "Exa is down for us" is not "your monitor failed". A provider is failing
from the end of its first poll cycle with errors until a cycle succeeds. While it fails, the daemon's
tick asks :meth:`SourceHealth.changes` for a ``source.error`` change each time the outage crosses the
``for`` of some rule (rules match it only once it has lasted their ``for``); the change's key names
the outage, so each rule notifies once per outage. When a cycle succeeds again the outage is over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from runwatch.model import Change, ChangeKind


@dataclass(slots=True)
class Outage:
    """One provider's current outage."""

    since: float
    error: str
    crossed: set[float] = field(default_factory=set)


class SourceHealth:
    """Per provider: failing since when, with what error, and which ``for`` thresholds were crossed."""

    def __init__(self) -> None:
        self.outages: dict[str, Outage] = {}

    def polled(self, provider: str, error: str | None, now: float) -> Outage | None:
        """Record a poll cycle's outcome; returns the outage it ended, if it ended one."""
        if error is None:
            return self.outages.pop(provider, None)
        outage = self.outages.get(provider)
        if outage is None:
            self.outages[provider] = Outage(now, error)
        else:
            outage.error = error
        return None

    def changes(self, now: float, thresholds: Iterable[float]) -> list[Change]:
        """A ``source.error`` change for each outage that crossed a new threshold since last asked."""
        out: list[Change] = []
        wanted = sorted(set(thresholds))
        for provider, outage in self.outages.items():
            lasted = now - outage.since
            fresh = {t for t in wanted if t <= lasted} - outage.crossed
            if not fresh:
                continue
            outage.crossed |= fresh
            out.append(outage_change(provider, outage, now))
        return out


def outage_change(provider: str, outage: Outage, now: float, *, resolved: bool = False) -> Change:
    return Change(
        key=f"{provider}:source:{'resolved' if resolved else 'error'}:{outage.since:.3f}",
        kind=ChangeKind.SOURCE_ERROR,
        provider=provider,
        monitor_id="",
        run_id="",
        run={},
        failed_reason=outage.error,
        detected_at=now,
        occurred_at=outage.since,
        failing_for=now - outage.since,
        resolved=resolved,
    )
