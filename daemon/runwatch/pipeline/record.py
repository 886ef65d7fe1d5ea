"""Record: the last stage. What a batch saw and decided goes to the state in one transaction (run
records, monitors, open alerts, outbox rows), then the channels with something new are woken.

Nothing is sent before it is recorded, so a crash loses no decision and repeats none.
"""

from __future__ import annotations

from collections.abc import Callable

from runwatch.pipeline.chain import Batch
from runwatch.pipeline.match import alerts_for
from runwatch.store.interfaces import Fence, Notification, Recorder


class Record:
    """Mark everything seen and queue what was decided, atomically; then wake the senders."""

    def __init__(
        self,
        recorder: Recorder,
        wake: Callable[[set[str]], None],
        fence: Callable[[str], Fence | None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.wake = wake
        #: The fence a write about a provider is made under (raises when this instance does not lead it).
        self.fence = fence

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
            catch_up=batch.catch_up,
            stuck=batch.stuck,
            fence=self.fence(src.provider) if self.fence is not None else None,
        )
        if queued:
            self.wake({n.channel for n in notes})
