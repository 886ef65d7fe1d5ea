"""The state's parts, each with one job, as small interfaces a second store (PostgreSQL) can implement.

- :class:`RunState`: what runwatch has seen of each run (read by sources and the Detect stage).
- :class:`Recorder`: records what a poll saw *and* the notifications decided about it, atomically.
- :class:`Meta`: a few keys about the state itself (first start, baselines).
- :class:`Outbox`: the notification log: queue, claims, outcomes, and the operator's view of it.
- :class:`Fence`: the lease a write is made under; a store that is shared checks it in the write's
  own transaction and raises :class:`~runwatch.errors.FencedOut` (writing nothing) when it is not held.
- :class:`Hints`: verified pushes waiting for the read they ask for (consumed by the record of it).

The calls are synchronous: SQLite answers in microseconds, and the delivery workers call the outbox
from their sending threads. A networked store implements them with a blocking driver in those same
threads (the event loop side only records and reads, in short transactions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runwatch.model import Alert, RunSnapshot
from runwatch.store.alert_state import AlertUpdate

#: The states of a notification: waiting (or retrying), acknowledged by its channel, given up.
OUTBOX_STATES: tuple[str, ...] = ("pending", "sent", "dead", "silenced")
#: States a notification does not leave (what retention and ``outbox purge`` delete).
FINISHED_STATES: tuple[str, ...] = ("sent", "dead", "silenced")


@dataclass(slots=True)
class RunRecord:
    """The state of one run, as last recorded."""

    monitor_id: str
    status: str
    done: bool
    events: set[str] = field(default_factory=set)
    #: When the run was created (the provider's time, else when runwatch first saw it).
    created_at: float = 0.0
    #: The ``stuck_after`` thresholds it has crossed (its ``run.stuck`` changes, already decided); a
    #: frozenset, so the runs never reported stuck (nearly all) share the one empty value.
    stuck: frozenset[float] = frozenset()


@dataclass(slots=True)
class MonitorRecord:
    """One monitor as its provider's listing last showed it, and where its schedule stands.

    ``due`` is the scheduled run being watched: the provider's next one, kept once passed until a run
    created at or after it (less a poll interval of slack) shows, or its missed run was reported;
    ``next_due`` is the provider's next one meanwhile. ``missed_due``/``missed_grace``: the due time
    a missed run was last reported for, and the largest ``grace`` reported (so a restart does not
    report it again).
    """

    provider: str
    monitor_id: str
    status: str | None
    raw: Mapping[str, Any]
    due: float | None = None
    next_due: float | None = None
    last_started: float | None = None
    missed_due: float | None = None
    missed_grace: float = 0.0


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Where reading one monitor's runs goes on next cycle: the cursors of a catch-up that ran out of
    pages, newest first (none: the listing was read to its end, or to runs already recorded).

    ``baseline``: they lead into the history a first start is still recording, so the runs read from
    them are baseline, not news. Recorded with the poll's runs in one transaction: a restart goes on
    from there, and a poll that failed half-way is read again.
    """

    cursors: tuple[str, ...] = ()
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class StuckMark:
    """The ``stuck_after`` thresholds an unfinished run has just crossed.

    Recorded in the transaction that queues the notifications its ``run.stuck`` change decided, so a
    restart or ``kill -9`` neither decides them again nor loses them.
    """

    provider: str
    run_id: str
    thresholds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a write is made under: the lease's name, its holder and the token it was given.

    The token grows with each new holder, so a write from an instance that lost the lease (paused past
    it, cut off) names an old token and is refused, even if that instance does not know yet.
    """

    lease: str
    holder: str
    token: int


@dataclass(frozen=True, slots=True)
class Notification:
    """One decided notification for one channel, before it is queued: the alert and its channel."""

    alert: Alert

    @property
    def channel(self) -> str:
        return self.alert.channel


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification a delivery worker has claimed and is about to send."""

    seq: int
    alert: Alert
    attempts: int
    created_at: float

    @property
    def id(self) -> str:
        return self.alert.id


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One row of the notification log as an operator sees it (``runwatch outbox list``)."""

    id: str
    channel: str
    rule: str
    severity: str
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float
    finished_at: float | None
    last_error: str | None
    title: str


class RunState(Protocol):
    """What runwatch has recorded about runs and monitors (read-only)."""

    def run(self, provider: str, run_id: str) -> RunRecord | None: ...

    def knows_monitor(self, provider: str, monitor_id: str) -> bool: ...

    def catch_up(self, provider: str, monitor_id: str) -> CatchUp | None: ...

    def status_counts(self) -> dict[tuple[str, str], int]: ...


class Meta(Protocol):
    """Small facts about the state itself."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class Recorder(Protocol):
    """Marks a poll's snapshots seen and queues its notifications in one transaction."""

    def record(
        self,
        provider: str,
        snapshots: Sequence[RunSnapshot],
        notifications: Iterable[Notification],
        now: float,
        *,
        monitor_id: str | None = None,
        retired: Sequence[str] = (),
        alert_updates: Sequence[AlertUpdate] = (),
        monitor_updates: Sequence[MonitorRecord] = (),
        baselined: str | None = None,
        catch_up: CatchUp | None = None,
        stuck: Sequence[StuckMark] = (),
        fence: Fence | None = None,
        hints_before: float | None = None,
    ) -> int: ...


class Outbox(Protocol):
    """The notification log: what is queued, claimed, sent or dead, per channel."""

    def claim(self, channel: str, now: float, limit: int, owner: str, lease: float) -> list[Claimed]: ...

    def release(self, seqs: Sequence[int]) -> None: ...

    def delivered(self, seq: int, now: float) -> None: ...

    def retry(self, seq: int, error: str, at: float) -> None: ...

    def dead(self, seq: int, error: str, now: float) -> None: ...

    def silenced(self, seq: int, reason: str, now: float) -> None: ...

    def silenced_ids(self, ids: Sequence[str]) -> set[str]: ...

    def finished_at(self, ids: Sequence[str]) -> dict[str, float | None]: ...

    def unsilence(self, ids: Sequence[str], now: float) -> int: ...

    def expire(self, channel: str, created_before: float, now: float) -> int: ...

    def next_due(self, channel: str) -> float | None: ...

    def counts(self) -> dict[tuple[str, str], int]: ...

    def oldest_pending(self) -> dict[str, float]: ...

    def items(self, *, state: str | None, channel: str | None, limit: int | None) -> list[OutboxItem]: ...

    def replay(self, ids: Sequence[str], *, dead: bool, channel: str | None, now: float) -> int: ...

    def purge(self, finished_before: float, states: Sequence[str]) -> int: ...


@dataclass(frozen=True, slots=True)
class Hint:
    """A verified push, recorded before it was answered: read ``monitor_id`` (``run_id``: until that
    run is read; empty: any read of the monitor) now. Never the truth about a run: only a reason to
    read it. ``event_id`` is what a repeat of the same push carries (Exa retries with the same id)."""

    provider: str
    event_id: str
    monitor_id: str
    run_id: str
    kind: str
    received_at: float


class Hints(Protocol):
    """Pushes waiting for their read, durable before they are answered.

    A hint is consumed in the transaction that records the read it asked for (the Recorder's
    ``hints_before``: hints received before the read began), so a crash between the answer and the
    read loses none, and one between the read and its record reads again.
    """

    def add(self, hint: Hint, *, renew: bool = False) -> bool:
        """Record a push (committed on return). False when its event id was recorded before: a
        repeat, acted on once. ``renew``: a repeat of one already consumed counts as new (Olostep's
        pushes carry no id; an identical body later is a later run's)."""
        ...

    def pending(self, provider: str) -> list[Hint]:
        """Hints not consumed yet, oldest first."""
        ...

    def expire(self, provider: str, received_before: float, now: float) -> list[Hint]:
        """Give up hints still waiting that were received before ``received_before`` (their run never
        showed); returns them."""
        ...

    def purge(self, consumed_before: float) -> int:
        """Forget consumed hints (and the event ids they keep) consumed before ``consumed_before``."""
        ...
