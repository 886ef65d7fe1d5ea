"""The pipeline: what turns a source's batch into decided notifications, one stage per module, in the
order the data meets them.

    MonitorBatch -> detect (diff against the state) -> monitors (the monitor on each change) -> match
    (rules) -> lifecycle (open, group, repeat, resolve, flap damping) -> record (state + outbox, in
    one transaction)

``chain`` holds the batch and runs the stages; ``grouping`` and ``silences`` serve the lifecycle
stage (``silences`` also the senders). Changes the clock makes rather than a poll have a module each:
``stuck`` (run.stuck), ``monitors`` (monitor.missed_run and monitor.status) and ``source_health``
(source.error); the service's tick asks them.

May import: the basics (``runwatch.model``, ``clock``, ``log``, ...), ``sources``, ``store`` and
``rules``. Nothing below it (sources, store, rules) imports it.
"""

from runwatch.pipeline.chain import Batch, Pipeline, Stage
from runwatch.pipeline.detect import Detect, diff
from runwatch.pipeline.lifecycle import Lifecycle
from runwatch.pipeline.match import Match, alerts_for
from runwatch.pipeline.monitors import Monitors, MonitorWatch
from runwatch.pipeline.record import Record
from runwatch.pipeline.silences import Muter, SilenceSpec
from runwatch.pipeline.source_health import SourceHealth
from runwatch.pipeline.stuck import StuckRun, stuck_runs

__all__ = [
    "Batch", "Detect", "Lifecycle", "Match", "MonitorWatch", "Monitors", "Muter", "Pipeline", "Record",
    "SilenceSpec", "SourceHealth", "Stage", "StuckRun", "alerts_for", "diff", "stuck_runs",
]  # fmt: skip
