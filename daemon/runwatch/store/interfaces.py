"""The state's parts, each with one job, as small interfaces every store implements.

- :class:`RunState`: what runwatch has seen of each run (read by sources and the Detect stage).
- :class:`Recorder`: records what a poll saw *and* the notifications decided about it, atomically.
- :class:`Meta`: a few keys about the state itself (first start, baselines).
- :class:`Outbox`: the notification log: queue, claims, outcomes, and the operator's view of it.
- :class:`Alerts`, :class:`Monitors`: open alerts and monitors as last recorded (read by the stages;
  written only through the recorder).
- :class:`Silences`: the silences added with ``runwatch silence add``.
- :class:`Store`: all of them, as the daemon opens them; :class:`SharedState`: what the operator's
  commands open beside a running daemon (no lock, never creates a state).
- :class:`Fence`: the lease a write is made under; a store that is shared checks it in the write's
  own transaction and raises :class:`~runwatch.errors.FencedOut` (writing nothing) when it is not held.
- :class:`Hints`: verified pushes waiting for the read they ask for (consumed by the record of it).
- :class:`SendLog`: when each rate-limited channel's last sends started: one ``rate`` budget for every
  sender of the state, kept across restarts.

The calls are synchronous: SQLite answers in microseconds, and the delivery workers call the outbox
from their sending threads. A networked store implements them with a blocking driver in those same
threads (the event loop side only records and reads, in short transactions).

A write a poller makes (a record, a meta key, silenced rows released) takes ``fence``: with several
instances on one store, the lease that makes this instance the poller, checked in the write's own
transaction (a store with one instance, SQLite, accepts it and has nothing to check).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runwatch.model import Alert, RunSnapshot
from runwatch.store.alert_state import AlertUpdate, OpenAlert

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


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence added from the CLI (kept in the state)."""

    id: str
    matchers: Mapping[str, str]
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""
    expired_at: float | None = None

    def active(self, now: float) -> bool:
        end = min(self.ends_at, self.expired_at) if self.expired_at is not None else self.ends_at
        return self.starts_at <= now < end


class RunState(Protocol):
    """What runwatch has recorded about runs and monitors (read-only, but for retention)."""

    @property
    def runs(self) -> Mapping[tuple[str, str], RunRecord]:
        """The unfinished runs, by (provider, run id): what the stuck-run check looks at."""
        ...

    def run(self, provider: str, run_id: str) -> RunRecord | None: ...

    def is_done(self, provider: str, run_id: str) -> bool | None: ...

    def unfinished(self, provider: str, monitor_id: str) -> Collection[str]: ...

    def listed_monitors(self, provider: str) -> list[str]: ...

    def knows_monitor(self, provider: str, monitor_id: str) -> bool: ...

    def catch_up(self, provider: str, monitor_id: str) -> CatchUp | None: ...

    def backlog(self, provider: str, monitor_id: str) -> tuple[str, ...]: ...

    def tracked(self) -> int: ...

    def status_counts(self) -> dict[tuple[str, str], int]: ...

    def purge_finished(self, finished_before: float) -> int: ...

    def reload(self, provider: str) -> None:
        """Read one provider's runs afresh from the store: another instance led it meanwhile."""
        ...


class Alerts(Protocol):
    """Open alerts (pending or firing), as last recorded; written only through the recorder."""

    @property
    def open(self) -> Mapping[str, OpenAlert]: ...

    def get(self, key: str) -> OpenAlert | None: ...

    def for_monitor(self, provider: str, monitor_id: str) -> list[OpenAlert]: ...

    def firing(self) -> int: ...

    def reload(self, provider: str) -> None:
        """Read the open alerts of one provider's groups afresh: another instance led it meanwhile."""
        ...


class Monitors(Protocol):
    """Monitors as their providers' listings last showed them; written only through the recorder."""

    @property
    def baselined(self) -> Collection[str]:
        """Providers whose first listing was recorded (a later one is news)."""
        ...

    def get(self, provider: str, monitor_id: str) -> MonitorRecord | None: ...

    def raw(self, provider: str, monitor_id: str) -> Mapping[str, Any]: ...

    def records(self) -> list[MonitorRecord]: ...

    def due_by(self, at: float) -> list[MonitorRecord]: ...

    def purge_deleted(self, before: float) -> int: ...

    def reload(self, provider: str) -> None:
        """Read one provider's monitors afresh: another instance led it meanwhile."""
        ...


class Silences(Protocol):
    """Silences added with ``runwatch silence add``, shared by the daemon and the command."""

    def add(
        self, matchers: Mapping[str, str], starts_at: float, ends_at: float, comment: str, created_by: str
    ) -> Silence: ...

    def expire(self, silence_id: str, now: float) -> bool: ...

    def all(self) -> list[Silence]:
        """Every silence, oldest start first; :class:`~runwatch.errors.StateError` when unreadable."""
        ...

    def close(self) -> None: ...


class Meta(Protocol):
    """Small facts about the state itself."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str, *, fence: Fence | None = None) -> None: ...

    def first_meta(self, key: str, value: str) -> str:
        """The key's value, set to ``value`` when it has none: the first writer wins, so instances
        starting together on one state agree on it (the state's ``first_start``)."""
        ...


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

    def claim(self, channel: str, now: float, limit: int, owner: str, lease: float) -> list[Claimed]:
        """Up to ``limit`` due rows, oldest first, claimed by ``owner`` until ``now + lease``: no other
        claim gets them until then (or until released or settled)."""
        ...

    def renew(self, seqs: Sequence[int], owner: str, until: float) -> set[int]:
        """Extend ``owner``'s claims on these rows; returns those still claimed by it (the others
        another sender took after the claim ran out: they must not be sent)."""
        ...

    def release(self, seqs: Sequence[int]) -> None: ...

    def delivered(self, seq: int, now: float) -> None: ...

    def retry(self, seq: int, error: str, at: float) -> None: ...

    def dead(self, seq: int, error: str, now: float) -> None: ...

    def silenced(self, seq: int, reason: str, now: float) -> None: ...

    def silenced_ids(self, ids: Sequence[str]) -> set[str]: ...

    def finished_at(self, ids: Sequence[str]) -> dict[str, float | None]:
        """When each of these notifications left the queue (sent, dead or silenced); None while it is
        pending. Ids the log no longer holds (retention) are absent."""
        ...

    def unsilence(self, ids: Sequence[str], now: float, *, fence: Fence | None = None) -> int: ...

    def expire(self, channel: str, created_before: float, now: float) -> int: ...

    def next_due(self, channel: str) -> float | None: ...

    def counts(self) -> dict[tuple[str, str], int]: ...

    def oldest_pending(self) -> dict[str, float]: ...

    def pending_count(self, channels: Sequence[str]) -> int: ...

    def channels(self) -> set[str]:
        """Channels with pending rows."""
        ...

    def known_ids(self, ids: Sequence[str]) -> set[str]: ...

    def items(self, *, state: str | None, channel: str | None, limit: int | None) -> list[OutboxItem]: ...

    def replay(self, ids: Sequence[str], *, dead: bool, channel: str | None, now: float) -> int: ...

    def purge(self, finished_before: float, states: Sequence[str]) -> int: ...

    def close(self) -> None: ...


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

    def reload_provider(self, provider: str) -> None:
        """Read ``provider``'s waiting hints afresh (another instance led it, and took pushes, meanwhile)."""
        ...

    #: Called once a hint is consumed by the read of what it named (the push-to-read metric).
    on_read: Callable[[Hint, float], None] | None


class SendLog(Protocol):
    """When a channel's last sends started, for its ``rate``: at most ``count`` sends start in any
    window of ``period`` seconds, whoever sends.

    Kept in the state, not in a sender's memory, so that every instance on a shared database draws on
    one budget per channel, and a restart (or a crash loop) frees no slot. :meth:`start` is the one
    decision, atomic across senders; :meth:`recent` only tells a sender how much to claim and how long
    to wait. Times are the senders' clocks (as the outbox's claims): keep the hosts' clocks in step.
    """

    def recent(self, channel: str) -> list[float]:
        """The start times kept for ``channel`` (its last sends, at most the ``count`` of the last
        :meth:`start`), oldest first."""
        ...

    def start(self, channel: str, now: float, count: int, period: float) -> bool:
        """Take a slot for a send of ``channel`` starting at ``now``: True (and recorded) when fewer than
        ``count`` sends started in ``(now - period, now]``, else False (nothing recorded)."""
        ...


class SharedState(Protocol):
    """What the operator's commands open beside a running daemon: the outbox, silences and meta keys
    (no lock, no in-memory copies, never creates a state)."""

    @property
    def where(self) -> str:
        """The state as a user names it (a file, or host, port and database; never a password)."""
        ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def silences(self) -> Silences: ...

    def get_meta(self, key: str) -> str | None: ...

    def open_alerts(self) -> list[OpenAlert]:
        """The open alerts as last recorded, read now (``runwatch status``)."""
        ...

    def close(self) -> None: ...


class Store(Meta, Recorder, Protocol):
    """The daemon's state: every part, opened once (with the lock of a state directory, or on a
    database several instances share)."""

    @property
    def where(self) -> str: ...

    @property
    def runs(self) -> RunState: ...

    @property
    def alerts(self) -> Alerts: ...

    @property
    def monitors(self) -> Monitors: ...

    @property
    def hints(self) -> Hints: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def silences(self) -> Silences: ...

    @property
    def sends(self) -> SendLog: ...

    def close(self) -> None: ...
