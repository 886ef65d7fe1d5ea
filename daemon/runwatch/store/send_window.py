"""The one rule of a channel's ``rate`` over its last send times, shared by every store's
:class:`~runwatch.store.interfaces.SendLog`: a send may start at ``now`` while fewer than ``count`` of
them are later than ``now - period``."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def in_window(sends: Sequence[float], now: float, period: float) -> int:
    """How many of ``sends`` count against a send starting at ``now``."""
    return sum(1 for t in sends if now < t + period)


def admit(sends: Sequence[float], now: float, count: int, period: float) -> list[float] | None:
    """The send times to keep once a send starts at ``now`` (the last ``count``, oldest first), or
    None when the window is full. Older times beyond ``count`` are dropped: they can no longer count
    in any window a later ``start`` with this rate asks about."""
    if in_window(sends, now, period) >= count:
        return None
    kept = sorted(sends)
    bisect.insort(kept, now)
    return kept[-count:]
