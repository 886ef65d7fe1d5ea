"""Who does what when several instances share one state: named leases with fencing tokens, and the
instances' heartbeats.

- :class:`Leases`: a lease (``poll:exa``, ``retention``) is held by one holder at a time, for a time to
  live, on the store's clock. Taking it gives a **fencing token** that grows with each new holder; the
  holder renews it with that token before it runs out. A holder that was paused past its lease (a long
  GC pause, ``SIGSTOP``, a network cut) finds its renewal refused, and every write it makes under the
  old token is refused too (:class:`~runwatch.store.interfaces.Fence`), even before it notices.
- :class:`Instances`: each instance says every few seconds that it lives, with a digest of the config
  that decides what it sends and when it last polled each provider successfully; ``runwatch status``
  and the config-mismatch check read them.

Two implementations, one per store (:func:`runwatch.store.open_leases` opens the config's):
:mod:`runwatch.store.postgres.leases` (several instances; expiry on the database's clock) and
:mod:`runwatch.store.sqlite.leases` (one instance, which the state directory's lock makes the only one:
it always gets the lease, and only the token is kept, so it still grows across restarts).

The calls are blocking: the leadership loop runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

#: The lease name of a provider's poller.
POLL_LEASE = "poll:{provider}"
#: The lease of the clock-made work that belongs to no provider (retention).
RETENTION_LEASE = "retention"


def poll_lease(provider: str) -> str:
    return POLL_LEASE.format(provider=provider)


@dataclass(frozen=True, slots=True)
class Lease:
    """One lease as the store holds it. ``held``: not run out yet, by the store's clock when read."""

    name: str
    holder: str
    token: int
    #: When this holder took it (the store's clock), not when it was last renewed.
    acquired_at: float
    expires_at: float
    held: bool


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance's last heartbeat. ``age``: seconds since it, by the store's clock when read."""

    name: str
    last_seen: float
    digest: str
    age: float
    #: provider -> unix time of this instance's last successful poll of it.
    polls: Mapping[str, float] = field(default_factory=dict)


class Leases(Protocol):
    """Named leases with fencing tokens."""

    #: Whether another process may hold these leases (PostgreSQL). False (SQLite): nothing changes the
    #: state behind this process's back, so a lease it holds cannot be lost to anyone.
    shared: bool

    def acquire(self, name: str, holder: str, ttl: float) -> int | None:
        """Take the lease if nobody holds it (never taken, run out, or released): its new token, which
        is larger than every token given before; None when another holder (or this one, under an
        earlier token) still holds it."""
        ...

    def renew(self, name: str, holder: str, token: int, ttl: float) -> bool:
        """Extend the lease by ``ttl`` from now; False when it ran out or was taken over meanwhile."""
        ...

    def release(self, name: str, holder: str, token: int) -> None:
        """Give the lease up now (at shutdown), so another instance takes it at once. The token stays
        with the lease, so the next holder's is still larger."""
        ...

    def leases(self) -> list[Lease]:
        """Every lease ever taken, held or not."""
        ...

    def close(self) -> None: ...


class Instances(Protocol):
    """Heartbeats of the instances sharing the state."""

    def heartbeat(self, name: str, digest: str, polls: Mapping[str, float]) -> None:
        """This instance lives (last seen: now, by the store's clock), with its config digest and its
        last successful poll per provider."""
        ...

    def instances(self) -> list[InstanceRecord]:
        """Every instance that ever beat, most recently seen first."""
        ...

    def close(self) -> None: ...


class LeaseStore(Leases, Instances, Protocol):
    """Both, as each store implements them (one connection for the leadership loop)."""
