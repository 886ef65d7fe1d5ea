"""The one rule of a channel's ``rate`` over its last send times, shared by every store's
:class:`~runwatch.store.interfaces.SendLog`: a send may start at ``now`` while fewer than ``count`` of
the sends before it are later than ``now - period``.

Only the last ``count`` send times can decide that, and of them only the oldest: the window is full
exactly when the ``count``-th latest send is less than a period old. So a store keeps them as a ring
(:class:`Ring`): ``count`` slots and the index of the oldest, ``head``. A start reads one slot and
writes one, whatever the rate, instead of counting a list that grows with ``count``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Ring:
    """A channel's last send times: ``sends`` in the order they were taken from ``head`` on (wrapping
    round), at most ``count`` of them; while fewer, in order from index 0 (``head`` is 0)."""

    sends: list[float]
    head: int = 0

    def ordered(self) -> list[float]:
        """Oldest first."""
        return self.sends[self.head :] + self.sends[: self.head]

    def fits(self, count: int) -> bool:
        """Whether its shape is a ring of ``count`` (a reload may have changed ``count``)."""
        n = len(self.sends)
        return (n == count and 0 <= self.head < count) or (n < count and self.head == 0)

    def reshaped(self, count: int) -> Ring:
        """The same last sends as a ring of ``count``: the newest ``count`` of them, oldest first."""
        return Ring(self.ordered()[-count:], 0)

    def admit(self, now: float, count: int, period: float) -> bool:
        """Take a slot at ``now`` (True) unless the window is full (False, unchanged)."""
        if not self.fits(count):
            fresh = self.reshaped(count)
            self.sends, self.head = fresh.sends, fresh.head
        if len(self.sends) < count:
            self.sends.append(now)
            return True
        if now < self.sends[self.head] + period:
            return False
        self.sends[self.head] = now
        self.head = (self.head + 1) % count
        return True
