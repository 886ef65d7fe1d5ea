"""The state: run state, the outbox, open alerts, monitors, silences and a few meta keys.

The parts' interfaces are in :mod:`runwatch.store.interfaces`; each backend implements them in its own
folder (``sqlite/``: one file per state directory, the default).

May import: the basics only; it keeps data (runs, monitors, open alerts, notifications, silences) and
knows nothing of the stages that decide it.
"""

from __future__ import annotations

from runwatch.store.interfaces import (
    OUTBOX_STATES,
    CatchUp,
    Claimed,
    MonitorRecord,
    Notification,
    OutboxItem,
    RunRecord,
)
from runwatch.store.sqlite import STATE_FILE, SqliteOutbox, SqliteState, open_outbox

#: The SQLite state opened on a directory (what tests and tools open directly).
State = SqliteState

__all__ = [
    "OUTBOX_STATES",
    "STATE_FILE",
    "CatchUp",
    "Claimed",
    "MonitorRecord",
    "Notification",
    "OutboxItem",
    "RunRecord",
    "SqliteOutbox",
    "State",
    "open_outbox",
]
