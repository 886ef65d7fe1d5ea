"""The state: run state, the outbox, open alerts, monitors, silences and a few meta keys.

The parts' interfaces are in :mod:`runwatch.store.interfaces`; each backend implements them in its own
folder (``sqlite/``: one file per state directory, the default). :func:`open_state` is the one way the
daemon opens a state, :func:`open_shared` the one way the operator's commands do.

May import: the basics only; it keeps data (runs, monitors, open alerts, notifications, silences) and
knows nothing of the stages that decide it.
"""

from __future__ import annotations

from pathlib import Path

from runwatch.store.interfaces import (
    OUTBOX_STATES,
    CatchUp,
    Claimed,
    Fence,
    MonitorRecord,
    Notification,
    OutboxItem,
    RunRecord,
    SharedState,
    Store,
)
from runwatch.store.sqlite import STATE_FILE, SqliteOutbox, SqliteShared, SqliteState, open_outbox

#: The SQLite state opened on a directory (what tests and tools open directly).
State = SqliteState

__all__ = [
    "OUTBOX_STATES",
    "STATE_FILE",
    "CatchUp",
    "Claimed",
    "Fence",
    "MonitorRecord",
    "Notification",
    "OutboxItem",
    "RunRecord",
    "SharedState",
    "SqliteOutbox",
    "State",
    "Store",
    "open_outbox",
    "open_shared",
    "open_state",
]


def open_state(state_dir: Path) -> Store:
    """The daemon's state, as the config says where it is: SQLite in ``state_dir`` (locked)."""
    return SqliteState(state_dir)


def open_shared(state_dir: Path) -> SharedState:
    """An existing state for the operator's commands, beside a running daemon (never creates one)."""
    return SqliteShared(state_dir)
