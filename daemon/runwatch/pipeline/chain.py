"""The chain of stages between a source and the outbox, and the batch that flows through it.

    MonitorBatch -> Detect (diff against the state; baseline on first sight, and for the history
                 a first start reads over later cycles) -> Monitors (the
                 monitor object on each change; a scheduled run that came) -> Match (rules)
                 -> Record (state + outbox rows in one transaction) -> wake Delivery

A monitor listing goes through :meth:`Monitors.listing` (monitor.status changes) and the same
Match -> Lifecycle -> Record stages.

The Lifecycle stage (alerts of rules with lifecycle keys: open, repeat, resolve, grouping and flap
damping) sits between Match and Record; its time-driven half is :meth:`Lifecycle.tick`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from runwatch.clock import Clock
from runwatch.model import Change
from runwatch.rules import Decision
from runwatch.sources.base import MonitorBatch
from runwatch.store.alert_state import AlertUpdate
from runwatch.store.interfaces import CatchUp, MonitorRecord, StuckMark


@dataclass(slots=True)
class Batch:
    """What flows through the stages for one monitor's poll."""

    source: MonitorBatch
    now: float
    changes: list[Change] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    baseline: bool = False
    alert_updates: list[AlertUpdate] = field(default_factory=list)
    monitor_updates: list[MonitorRecord] = field(default_factory=list)
    #: A provider whose first monitor listing this batch records (silently).
    monitors_baselined: str | None = None
    #: Where the monitor's poll left off, recorded with the batch (None: as it was).
    catch_up: CatchUp | None = None
    #: The stuck thresholds a run crossed (a ``run.stuck`` change the clock made), recorded with it.
    stuck: list[StuckMark] = field(default_factory=list)


Stage = Callable[[Batch], None]


class Pipeline:
    def __init__(self, stages: Sequence[Stage], clock: Clock) -> None:
        self.stages = list(stages)
        self.clock = clock

    async def __call__(self, source_batch: MonitorBatch) -> None:
        batch = Batch(source_batch, self.clock.now())
        for stage in self.stages:
            stage(batch)
