"""Pushes waiting for their read: what every store keeps of them in memory, and how a record
consumes them.

A hint is written (committed) before its push is answered, so a ``kill -9`` right after the answer
still reads the run after the restart. The recorder consumes hints inside the transaction that records
the read they asked for (:meth:`PendingHints.answered`, the backend's write, then
:meth:`PendingHints.apply_consumed` after the commit), so memory never runs ahead of the store. Each
backend (``sqlite/hints.py``, ``postgres/hints.py``) adds its SQL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence

from runwatch.model import RunSnapshot
from runwatch.store.interfaces import Hint

#: Called once a hint is consumed by the read of what it named: (the hint, when it was read).
OnRead = Callable[[Hint, float], None]


class PendingHints(ABC):
    """Per (provider, monitor), the hints not consumed yet; the backend writes the rows."""

    def __init__(self, waiting: Iterable[Hint]) -> None:
        #: The daemon's hook for ``runwatch_push_to_read_seconds`` (None: nobody measures).
        self.on_read: OnRead | None = None
        self._pending: dict[tuple[str, str], dict[str, Hint]] = {}
        for hint in waiting:
            self._keep(hint)

    @abstractmethod
    def _insert(self, hint: Hint, renew: bool) -> bool:
        """Write (and commit) the row; False when its event id is recorded (and, with ``renew``,
        still waiting)."""

    @abstractmethod
    def _mark(self, hints: Sequence[Hint], now: float) -> None:
        """Mark the rows consumed, committed."""

    @abstractmethod
    def reload_provider(self, provider: str) -> None:
        """Read ``provider``'s waiting hints afresh from the store (:meth:`reload`)."""

    @abstractmethod
    def purge(self, consumed_before: float) -> int:
        """Forget consumed hints (and the event ids they keep) consumed before ``consumed_before``."""

    def _keep(self, hint: Hint) -> None:
        self._pending.setdefault((hint.provider, hint.monitor_id), {})[hint.event_id] = hint

    # -- the Hints interface ----------------------------------------------------------------------------
    def add(self, hint: Hint, *, renew: bool = False) -> bool:
        if hint.event_id in self._pending.get((hint.provider, hint.monitor_id), {}):
            return False  # waiting already: no write at all
        if not self._insert(hint, renew):
            return False
        self._keep(hint)
        return True

    def pending(self, provider: str) -> list[Hint]:
        found = [h for (p, _), hints in self._pending.items() if p == provider for h in hints.values()]
        return sorted(found, key=lambda h: h.received_at)

    def expire(self, provider: str, received_before: float, now: float) -> list[Hint]:
        old = [h for h in self.pending(provider) if h.received_at < received_before]
        if old:
            self._mark(old, now)
            self._drop(old)
        return old

    # -- consumed by a record ---------------------------------------------------------------------------
    def answered(
        self,
        provider: str,
        monitor_id: str | None,
        snapshots: Sequence[RunSnapshot],
        retired: Sequence[str],
        is_done: Callable[[str, str], bool | None],
        before: float | None,
    ) -> tuple[list[Hint], set[str]]:
        """The hints a read of ``monitor_id`` that began at ``before`` answers, and the runs it read:
        hints received by then that name the monitor as a whole, a run it read, or a run recorded
        finished (a poll got there first). Nothing when ``before`` is None (not a read)."""
        hints = self._pending.get((provider, monitor_id or "")) if before is not None else None
        if not hints or before is None:
            return [], set()
        read = {s.run_id for s in snapshots} | set(retired)
        found = [
            h
            for h in hints.values()
            if h.received_at <= before
            and (not h.run_id or h.run_id in read or is_done(provider, h.run_id) is True)
        ]
        return found, read

    def apply_consumed(self, hints: Sequence[Hint], read: Collection[str], now: float) -> None:
        """After the commit: out of memory, and measured when the read was of what they named."""
        self._drop(hints)
        if self.on_read is not None:
            for h in hints:
                if not h.run_id or h.run_id in read:
                    self.on_read(h, now)

    def reload(self, provider: str, waiting: Iterable[Hint]) -> None:
        """Another instance led ``provider`` meanwhile: its waiting hints as the store has them now."""
        self._pending = {k: v for k, v in self._pending.items() if k[0] != provider}
        for hint in waiting:
            self._keep(hint)

    def _drop(self, hints: Sequence[Hint]) -> None:
        for h in hints:
            key = (h.provider, h.monitor_id)
            left = self._pending.get(key)
            if left is not None:
                left.pop(h.event_id, None)
                if not left:
                    del self._pending[key]
