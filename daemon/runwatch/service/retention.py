"""The state does not grow without bound: finished notifications and finished runs age out.

Sent and dead notifications older than ``delivery.keep`` and runs that finished longer ago than
``state.keep_finished`` (with their events) are deleted, and so are monitors recorded as deleted that long
ago, and the ids of pushes acted on more than three days ago. Forgetting a run must not make it news again
if a listing shows it later, so the cut-off is kept as ``retention_horizon``: the daemon ignores runs
created before it, as it ignores runs from before its first start.
"""

from __future__ import annotations

from runwatch.clock import Clock
from runwatch.config import Settings
from runwatch.log import get_logger
from runwatch.store.interfaces import FINISHED_STATES, Fence, Store

#: How long the id of a push that was acted on is remembered (a provider retrying it later is a
#: repeat): longer than Exa or anyone retries a webhook.
PUSH_IDS_KEPT = 3 * 86400.0

log = get_logger(__name__)


class Retention:
    """Deletes what aged out, when asked; the daemon asks every ``interval`` seconds."""

    def __init__(self, state: Store, settings: Settings, clock: Clock) -> None:
        self.state = state
        self.keep = settings.delivery.keep
        self.keep_finished = settings.state.keep_finished
        self.clock = clock
        #: Often enough that a short ``keep`` (rehearsals use seconds) is honoured, at most hourly.
        self.interval = max(1.0, min(3600.0, self.keep / 10, self.keep_finished / 10))

    def run_once(self, fence: Fence | None = None) -> float | None:
        """Delete what aged out now; returns the new retention horizon if runs were forgotten. The
        horizon is written under ``fence`` (the ``retention`` lease: one instance does this); the
        deletes themselves need none, deleting what aged out twice deletes it once."""
        now = self.clock.now()
        rows = self.state.outbox.purge(now - self.keep, FINISHED_STATES)
        horizon = now - self.keep_finished
        runs = self.state.runs.purge_finished(horizon)
        monitors = self.state.monitors.purge_deleted(horizon)
        pushes = self.state.hints.purge(now - PUSH_IDS_KEPT)
        if runs:
            self.state.set_meta("retention_horizon", repr(horizon), fence=fence)
        if rows or runs or monitors or pushes:
            log.info(
                "retention.purged", notifications=rows, runs=runs, deleted_monitors=monitors, pushes=pushes
            )
        return horizon if runs else None
