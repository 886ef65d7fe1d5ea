"""The state: run state, the outbox, open alerts, monitors, silences, pushes waiting for their read
(hints) and a few meta keys.

The parts' interfaces are in :mod:`runwatch.store.interfaces`; each backend implements them in its own
folder (``sqlite/``: one file per state directory, the default; ``postgres/``: one database that
several instances may share). :func:`open_state` is the one way the daemon opens a state, by its
:class:`Location`; :func:`open_shared` the one way the operator's commands do; :func:`open_leases`
opens the leases and heartbeats of the same store (:mod:`runwatch.store.leases`).

May import: the basics only; it keeps data (runs, monitors, open alerts, notifications, silences) and
knows nothing of the stages that decide it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch.clock import Clock
from runwatch.errors import StateError, StateMissingError
from runwatch.store.interfaces import (
    OUTBOX_STATES,
    CatchUp,
    Claimed,
    Fence,
    Hint,
    Hints,
    MonitorRecord,
    Notification,
    OutboxItem,
    RunRecord,
    SharedState,
    Store,
    StuckMark,
)
from runwatch.store.leases import LeaseStore
from runwatch.store.sqlite import STATE_FILE, SqliteOutbox, SqliteShared, SqliteState, open_outbox
from runwatch.store.sqlite.leases import SqliteLeases
from runwatch.store.sqlite.lock import StateLock

if TYPE_CHECKING:
    from runwatch.store.postgres import Target

#: The SQLite state opened on a directory (what tests and tools open directly).
State = SqliteState

__all__ = [
    "OUTBOX_STATES",
    "STATE_FILE",
    "CatchUp",
    "Claimed",
    "Fence",
    "Hint",
    "Hints",
    "Location",
    "MonitorRecord",
    "Notification",
    "OutboxItem",
    "RunRecord",
    "SharedState",
    "SqliteOutbox",
    "State",
    "Store",
    "StuckMark",
    "copy_state",
    "describe",
    "open_leases",
    "open_outbox",
    "open_shared",
    "open_state",
]


@dataclass(frozen=True, slots=True)
class Location:
    """Where the state is, as the config says: SQLite in ``state_dir`` when ``url`` is None, else the
    PostgreSQL database ``url`` names (``password``: from a credential, for a URL without one)."""

    state_dir: Path
    url: str | None = None
    password: str | None = None
    #: This instance's name (PostgreSQL shows it as the connections' ``application_name``).
    instance: str = ""

    def target(self) -> Target:
        """The PostgreSQL database (only when ``url`` is set)."""
        from runwatch.store.postgres import Target

        assert self.url is not None
        return Target(self.url, self.password, self.instance)

    @property
    def where(self) -> str:
        """The state as a user names it: the SQLite file, or the database without its password."""
        return str(self.state_dir / STATE_FILE) if self.url is None else self.target().where


def open_state(where: Location) -> Store:
    """The daemon's state: SQLite in ``state_dir`` (taking its lock, creating or migrating the file),
    or PostgreSQL (creating or migrating the schema); a StateError line naming what is wrong."""
    if where.url is None:
        return SqliteState(where.state_dir)
    from runwatch.store.postgres import PostgresState

    target = where.target()  # a URL libpq cannot read is refused before the lock is taken
    return PostgresState(target, lock=hold(where.state_dir))


def open_leases(where: Location, clock: Clock | None = None, *, create: bool = True) -> LeaseStore:
    """The leases and heartbeats of the store ``where`` names, on a connection of their own (the
    leadership loop's, or ``runwatch status``'s). SQLite: the state file's, always this instance's;
    PostgreSQL: shared by every instance, expiry on the database's clock. ``create=False``: a command,
    which never creates a state."""
    if where.url is None:
        return SqliteLeases(where.state_dir / STATE_FILE, clock, create=create)
    from runwatch.store.postgres.leases import PostgresLeases

    return PostgresLeases(where.target(), create=create)


def hold(state_dir: Path) -> StateLock:
    """The lock of ``state_dir`` (created if need be), whichever store: one daemon per state directory,
    and the pid ``runwatch reload`` signals; StateLockedError naming the holder."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create state_dir {state_dir}: {exc.strerror}") from None
    return StateLock(state_dir)


def copy_state(state_dir: Path, to: Location) -> dict[str, int]:
    """``runwatch state copy``: the SQLite state of ``state_dir`` into the empty PostgreSQL database of
    ``to``, in one transaction; returns the rows copied per table (``notifications:<state>`` too).

    Holds ``state_dir``'s lock meanwhile, so a daemon running on it is refused (and none starts while
    it copies); a database that already holds a runwatch state is refused, writing nothing.
    """
    from runwatch.store.postgres.restore import restore
    from runwatch.store.sqlite.database import open_state as open_file
    from runwatch.store.sqlite.dump import dump

    path = state_dir / STATE_FILE
    if not path.is_file():
        raise StateMissingError(f"no state at {path}: has the daemon run with this config (state_dir)?")
    target = to.target()
    lock = StateLock(state_dir)
    try:
        db = open_file(path)  # an older state is upgraded first, as the daemon would
        try:
            tables = list(dump(db))
        finally:
            db.close()
        copied = restore(target, tables)
    finally:
        lock.release()
    for table in tables:
        if table.name == "notifications":
            state = table.columns.index("state")
            for row in table.rows:
                key = f"notifications:{row[state]}"
                copied[key] = copied.get(key, 0) + 1
    return copied


def describe(where: Location) -> str | None:
    """What ``runwatch check`` says of the state: for PostgreSQL, that the database answers and which
    schema it holds (a StateError line if it cannot be used); None for SQLite (opened at start)."""
    if where.url is None:
        return None
    from runwatch.store.postgres import SCHEMA_VERSION, probe

    target = where.target()
    found = probe(target)
    held = f"schema {found}" if found else "no runwatch schema yet (the daemon creates it)"
    older = f", this runwatch upgrades it to {SCHEMA_VERSION}" if 0 < found < SCHEMA_VERSION else ""
    return f"{target.where} reachable, {held}{older}"


def open_shared(where: Location) -> SharedState:
    """An existing state for the operator's commands, beside running daemons (never creates one)."""
    if where.url is None:
        return SqliteShared(where.state_dir)
    from runwatch.store.postgres import PostgresShared

    return PostgresShared(where.target())
