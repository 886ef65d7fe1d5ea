"""Which monitors to poll in a cycle: poll what can change, at the pace it can change.

- A monitor with an unfinished run is polled every ``poll_interval``.
- So is a monitor from its next scheduled run (the provider's ``nextRunAt``/``next_run_at``, else its
  cron in its time zone) until that run is seen (or ``idle_poll_interval`` after it, if it never
  shows): the scheduled run is seen as fast as any, and once seen it is unfinished, so it stays hot
  until it ends; then the monitor is idle again.
- Any other monitor is idle: polled every ``idle_poll_interval`` (a run started by hand between
  schedules is seen within that), and so is the monitor list.

Idle polls are spread across the interval instead of landing together: each monitor has a phase, a
point of the idle interval it is polled at. The monitors a listing shows for the first time get phases
evenly spaced over the interval from that listing on (their first poll is at once: a first sight needs
its baseline), so with N idle monitors each cycle asks about N * poll_interval / idle_poll_interval of
them, not all N once every idle interval. A monitor that goes idle after being hot goes back to its phase.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

#: The last answer of :func:`next_cron` per (expression, time zone): valid until that time passes, so a
#: monitor polled every cycle does not run croniter every cycle.
_NEXT: dict[tuple[str, str | None], tuple[float, float | None]] = {}


def next_cron(expr: str, timezone: str | None, after: float) -> float | None:
    """:func:`compute_next_cron`, remembered until the time it gave has passed."""
    key = (expr, timezone)
    hit = _NEXT.get(key)
    if hit is not None and hit[0] <= after and (hit[1] is None or after < hit[1]):
        return hit[1]
    nxt = compute_next_cron(expr, timezone, after)
    if len(_NEXT) > 10_000:
        _NEXT.clear()
    _NEXT[key] = (after, nxt)
    return nxt


def compute_next_cron(expr: str, timezone: str | None, after: float) -> float | None:
    """The next time ``expr`` fires after ``after`` (unix seconds), in ``timezone`` (DST-aware).

    As cron does: a time the spring change skips fires at the jump (``0 2 * * *`` in Europe/Berlin
    fires at 03:00 CEST that day), and a fixed hour the autumn change repeats fires once, at its
    first occurrence (croniter alone would fire again an hour later). ``None`` for an expression or a
    time zone it cannot read.
    """
    try:
        tz = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    try:
        it = croniter(expr, datetime.fromtimestamp(after, UTC).astimezone(tz))
        nxt: datetime = it.get_next(datetime)
        fields = expr.split()
        fixed_hour = len(fields) >= 5 and not any(c in fields[1] for c in "*/")
        for _ in range(8):
            first = nxt.replace(fold=0).timestamp()
            if not fixed_hour or first >= nxt.timestamp():
                break  # not the second pass through a repeated hour
            if first > after:
                return first
            nxt = it.get_next(datetime)
    except (ValueError, KeyError, TypeError):
        return None
    return nxt.timestamp()


class Schedule:
    """Per provider: when each monitor is next polled, and when the monitor list is next read."""

    def __init__(self, poll_interval: float, idle_interval: float) -> None:
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self._next_idle: dict[str, float] = {}
        #: Per monitor, where in the idle interval its idle polls fall (seconds, 0 <= phase < interval).
        self._phase: dict[str, float] = {}
        self._due_at: dict[str, float] = {}
        #: A scheduled run's due time that has passed while its window is still open: a provider may
        #: announce the next one before the run it just started is visible.
        self._passed: dict[str, float] = {}
        self._list_at = 0.0
        #: How long after a due time a monitor whose run has not come stays hot (see watch_due).
        self.watch_after_due = 0.0

    # -- the monitor list ----------------------------------------------------------------------------
    def listing_due(self, now: float) -> bool:
        return now >= self._list_at

    def listed(self, now: float, due: dict[str, float | None]) -> None:
        """A fresh listing: its monitors and the next scheduled run of each (None: not known)."""
        self._list_at = now + self.idle_interval
        new = [mid for mid in due if mid not in self._phase]
        for i, mid in enumerate(new):
            # Evenly over the interval from now on; half a cycle on, so that the first of them is not
            # due again the very cycle after its first poll.
            offset = self.poll_interval / 2 + (i + 0.5) * self.idle_interval / len(new)
            self._phase[mid] = (now + offset) % self.idle_interval
        for mid, at in due.items():
            self.expect(mid, at, now)
        for table in (self._next_idle, self._due_at, self._passed, self._phase):
            for gone in set(table) - set(due):
                del table[gone]

    def expect(self, monitor_id: str, at: float | None, now: float) -> None:
        """The monitor's next scheduled run is due at ``at`` (None: not known), as of ``now``."""
        old = self._due_at.get(monitor_id)
        if old is not None and old != at and old <= now:
            self._passed[monitor_id] = old
        if at is None:
            self._due_at.pop(monitor_id, None)
        else:
            self._due_at[monitor_id] = at

    def started(self, monitor_id: str, at: float) -> None:
        """A poll saw a run of the monitor created at ``at``: the scheduled run due by then is here, so
        its window closes (the run itself keeps the monitor hot until it ends). A poll interval of
        slack covers a provider that creates a run a moment before the time it announced."""
        for table in (self._due_at, self._passed):
            due = table.get(monitor_id)
            if due is not None and due <= at + self.poll_interval:
                del table[monitor_id]

    # -- one monitor ---------------------------------------------------------------------------------
    def hot(self, monitor_id: str, now: float, unfinished: bool) -> bool:
        """Polled at ``poll_interval`` now: something unfinished, or a scheduled run due around now."""
        if unfinished:
            return True
        window = max(self.idle_interval, self.watch_after_due)
        for due in (self._due_at.get(monitor_id), self._passed.get(monitor_id)):
            if due is not None and due <= now <= due + window:
                return True
        return False

    def watch_due(self, grace: float) -> None:
        """Keep a monitor whose scheduled run is late polled at ``poll_interval`` until ``grace`` (the
        rules' largest ``monitor.missed_run`` grace) has passed, one cycle more: a late run is seen
        at once, and a missing one is confirmed by a fresh poll right when its grace ends."""
        self.watch_after_due = grace + self.poll_interval if grace > 0 else 0.0

    def due(self, monitor_id: str, now: float, unfinished: bool) -> bool:
        if self.hot(monitor_id, now, unfinished):
            return True
        # Half a cycle of slack: a monitor due a moment after this cycle's tick is polled now, not a
        # whole cycle late.
        return now >= self.next_idle(monitor_id) - self.poll_interval / 2

    def plan(
        self,
        monitors: Iterable[str],
        now: float,
        busy: Callable[[str], bool],
        urgent: Sequence[str] = (),
    ) -> tuple[list[str], list[str]]:
        """This cycle's polls: the hot monitors (``busy``: something unfinished or a catch-up going on;
        or a scheduled run due), then the idle ones that are due, the longest waiting first. The hot
        ones go first so that the request budget serves them before any idle one.

        ``urgent`` monitors (a push asked to read them; oldest push first) lead the idle ones whether
        due or not: read this cycle, after the hot ones, so a burst of pushes never delays an active
        monitor, and within the idle share of the budget like any idle poll.
        """
        rank = {mid: i for i, mid in enumerate(urgent)}
        hot: list[str] = []
        first: list[str] = []
        idle: list[str] = []
        slack = self.poll_interval / 2
        for mid in monitors:
            if busy(mid) or self.hot(mid, now, False):
                hot.append(mid)
            elif mid in rank:
                first.append(mid)
            elif now >= self._next_idle.get(mid, -math.inf) - slack:
                idle.append(mid)
        idle.sort(key=self.next_idle)
        first.sort(key=rank.__getitem__)
        return hot, first + idle

    def next_idle(self, monitor_id: str) -> float:
        """When the monitor's next idle poll is due (-inf: never polled yet, due at once)."""
        return self._next_idle.get(monitor_id, -math.inf)

    def polled(self, monitor_id: str, now: float) -> None:
        """The monitor was polled at ``now``: its next idle poll is its next phase after this cycle's
        slack (polled at its phase, that is one idle interval on; polled late, it keeps its phase)."""
        if self.idle_interval <= self.poll_interval:  # idle monitors too are polled every cycle
            self._next_idle[monitor_id] = now + self.idle_interval
            return
        phase = self._phase.get(monitor_id)
        if phase is None:  # polled without a listing (configured ids the list did not answer for)
            phase = self._phase[monitor_id] = self._hash_phase(monitor_id)
        after = now + self.poll_interval / 2
        self._next_idle[monitor_id] = phase + (math.floor((after - phase) / self.idle_interval) + 1) * (
            self.idle_interval
        )

    def _hash_phase(self, monitor_id: str) -> float:
        """A phase that depends on the id alone: stable across cycles and restarts."""
        return zlib.crc32(monitor_id.encode()) / 2**32 * self.idle_interval
