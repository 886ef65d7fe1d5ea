"""Which monitors to poll in a cycle: poll what can change, at the pace it can change.

- A monitor with an unfinished run is polled every ``poll_interval``.
- So is a monitor from its next scheduled run (the provider's ``nextRunAt``/``next_run_at``, else its
  cron in its time zone) until ``idle_poll_interval`` after it: the scheduled run is seen as fast as
  any, and once seen it is unfinished, so it stays hot until it ends.
- Any other monitor is idle: polled every ``idle_poll_interval`` (a run started by hand between
  schedules is seen within that), and so is the monitor list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


def next_cron(expr: str, timezone: str | None, after: float) -> float | None:
    """The next time ``expr`` fires after ``after`` (unix seconds), in ``timezone`` (DST-aware)."""
    try:
        tz = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    try:
        it = croniter(expr, datetime.fromtimestamp(after, UTC).astimezone(tz))
        nxt: datetime = it.get_next(datetime)
    except (ValueError, KeyError, TypeError):
        return None
    return nxt.timestamp()


class Schedule:
    """Per provider: when each monitor is next polled, and when the monitor list is next read."""

    def __init__(self, poll_interval: float, idle_interval: float) -> None:
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self._next_idle: dict[str, float] = {}
        self._due_at: dict[str, float] = {}
        self._list_at = 0.0

    # -- the monitor list ----------------------------------------------------------------------------
    def listing_due(self, now: float) -> bool:
        return now >= self._list_at

    def listed(self, now: float, due: dict[str, float | None]) -> None:
        """A fresh listing: its monitors and the next scheduled run of each (None: not known)."""
        self._list_at = now + self.idle_interval
        for mid, at in due.items():
            if at is None:
                self._due_at.pop(mid, None)
            else:
                self._due_at[mid] = at
        for gone in set(self._next_idle) - set(due):
            self._next_idle.pop(gone, None)
            self._due_at.pop(gone, None)

    # -- one monitor ---------------------------------------------------------------------------------
    def hot(self, monitor_id: str, now: float, unfinished: bool) -> bool:
        """Polled at ``poll_interval`` now: something unfinished, or a scheduled run due around now."""
        if unfinished:
            return True
        due = self._due_at.get(monitor_id)
        return due is not None and due <= now <= due + self.idle_interval

    def due(self, monitor_id: str, now: float, unfinished: bool) -> bool:
        if self.hot(monitor_id, now, unfinished):
            return True
        nxt = self._next_idle.get(monitor_id)
        # Half a cycle of slack: a monitor due a moment after this cycle's tick is polled now, not a
        # whole cycle late.
        return nxt is None or now >= nxt - self.poll_interval / 2

    def polled(self, monitor_id: str, now: float) -> None:
        self._next_idle[monitor_id] = now + self.idle_interval
