"""Exa's events API as a catch-up: which monitors had a run since a time, in one paged request.

``GET /v0/events?types=monitor.run.created&types=monitor.run.completed&createdAfter=...`` (paged,
newest first; ``shared/api/exa.md``) names every monitor that had a run created (or completed) since
then. Every run is created before anything else happens to it, so a monitor the events do not name
had no new run, and reading its runs would only repeat what the state holds. So the Exa source, with
push on (``webhook_secret`` set: the account's events are what its webhooks carry):

- once an idle interval, reads the events since the oldest time up to which every monitor's runs are
  known (its *coverage*: when it was last read, or last covered by an events read), less
  :data:`LAG` (an event may show in the API a little after its ``createdAt``); the monitors named are
  read this cycle, ahead of the idle ones; every other monitor is covered up to now, and its idle
  polls are skipped until the next events read (it is not read one by one at all while idle);
- after a restart, covers the monitors the state knows from the coverage the state recorded (the
  daemon keeps it, :mod:`runwatch.service.coverage`): a downtime costs one paged request, not a read
  of every monitor.

The listing stays the fallback, and nothing is missed either way: without a coverage (a first start,
a monitor the state does not know, one whose read failed) a monitor is read as before; an events read
that fails, or would reach further back than :data:`MAX_AGE` or :data:`MAX_PAGES`, covers nothing,
and the idle polls go on as before (a 4xx other than 429 turns the events API off for this source,
with a log line); a skip counts only while the last events read is at most an idle interval old.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from runwatch.log import get_logger
from runwatch.sources.base import PageShape, read_pages
from runwatch.sources.http import ApiClient, ApiError

log = get_logger(__name__)

#: The events that say a monitor had a run (Exa sends none for a failed or canceled run, but the run
#: was created before it failed: its ``monitor.run.created`` names the monitor).
RUN_TYPES = ("monitor.run.created", "monitor.run.completed")
#: Events per page (the documented maximum) and pages per read: beyond 10,000 run events since the
#: coverage, reading the monitors one by one is cheaper, and the read falls back to it.
PAGE_LIMIT = 200
MAX_PAGES = 50
#: Each read reaches this far before the coverage: an event may show a little after its createdAt.
LAG = 60.0
#: A coverage older than this is not caught up through events (their retention is not documented).
MAX_AGE = 7 * 86400.0
SHAPE = PageShape(items="data", more="hasMore", cursor="nextCursor")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class EventsCatchUp:
    """One Exa source's coverage of its monitors, and the events reads that extend it."""

    def __init__(self, api: ApiClient, poll_interval: float, idle_interval: float) -> None:
        self.api = api
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        #: monitor -> the time up to which its runs are known (read, or covered by an events read).
        self.coverage: dict[str, float] = {}
        #: Every monitor the state knows was covered up to this (from the state, after a restart).
        self.start: float | None = None
        #: When the last events read was tried, and the last that succeeded (its cycle's ``now``).
        self.last_try: float | None = None
        self.last_ok: float | None = None
        self.off = False
        #: Events reads made, and monitors whose idle poll they saved (for logs and tests).
        self.reads = 0
        self.skipped = 0

    def read_done(self, monitor_id: str, now: float) -> None:
        """The monitor's runs were read by the cycle that began at ``now``."""
        if self.coverage.get(monitor_id, -1.0) < now:
            self.coverage[monitor_id] = now

    def covered(self, monitors: Collection[str]) -> float | None:
        """Up to when every one of ``monitors`` is covered (None: some monitor is not)."""
        if not monitors or any(m not in self.coverage for m in monitors):
            return None
        return min(self.coverage[m] for m in monitors)

    def due(self, now: float) -> bool:
        if self.off:
            return False
        return self.last_try is None or now - self.last_try >= self.idle_interval - self.poll_interval / 2

    def since(self, monitors: Iterable[str], known: Collection[str]) -> float | None:
        """Where a read must start to cover every monitor that has a coverage (None: none has)."""
        times = [self.coverage[m] for m in monitors if m in self.coverage]
        if self.start is not None and any(m in known and m not in self.coverage for m in monitors):
            times.append(self.start)
        return min(times) - LAG if times else None

    async def catch_up(
        self, monitors: Collection[str], known: Collection[str], now: float
    ) -> set[str] | None:
        """When due, read the run events since the coverage: the monitors they name (to read now), and
        every other monitor covered up to ``now``. None when no read was made or it failed."""
        if not self.due(now):
            return None
        since = self.since(monitors, known)
        if since is None:
            return None
        self.last_try = now
        if now - since > MAX_AGE:
            log.info("events.too_old", provider=self.api.provider, since=_iso(since), hint="listing instead")
            self.start = None
            return None
        named = await self._read(since)
        if named is None:
            return None
        covered = 0
        for m in monitors:
            base = self.coverage.get(m, self.start if m in known else None)
            if m not in named and base is not None and base - LAG >= since - 1e-6:
                self.coverage[m] = now
                covered += 1
        self.start = None
        self.last_ok = now
        self.reads += 1
        log.info(
            "events.caught_up",
            provider=self.api.provider,
            since=_iso(since),
            named=len(named & set(monitors)),
            covered=covered,
        )
        return named

    def skips(self, monitor_id: str, now: float) -> bool:
        """Whether the monitor's idle poll is not needed now: covered by the last events read (or read
        since), which is recent enough."""
        last = self.last_ok
        if last is None or now - last > self.idle_interval + self.poll_interval:
            return False
        return self.coverage.get(monitor_id, -1.0) >= last

    async def _read(self, since: float) -> set[str] | None:
        """The monitors the run events since ``since`` name; None when the read failed or was cut."""
        params: dict[str, Any] = {"types": list(RUN_TYPES), "createdAfter": _iso(since), "limit": PAGE_LIMIT}
        named: set[str] = set()
        cut = False
        pages = read_pages(
            self.api, "/v0/events", params, shape=SHAPE, endpoint="list_events", what="events list",
            max_pages=MAX_PAGES,
        )  # fmt: skip
        try:
            async for data, nxt in pages:
                cut = nxt is not None  # still so after the last page: the listing was cut
                for event in data:
                    body = event.get("data") if isinstance(event, dict) else None
                    monitor = body.get("monitorId") if isinstance(body, dict) else None
                    if isinstance(monitor, str) and monitor:
                        named.add(monitor)
        except ApiError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                self.off = True
                log.warning(
                    "events.unavailable",
                    provider=self.api.provider,
                    status=exc.status,
                    hint="the events API refused; idle monitors are polled one by one as without push",
                )
            else:
                log.warning("events.failed", provider=self.api.provider, reason=exc.reason, error=str(exc))
            return None
        finally:
            await pages.aclose()
        if cut:  # too many pages, or a cursor loop: it says nothing of the rest
            log.info("events.cut", provider=self.api.provider, hint="idle monitors are read one by one")
            return None
        return named
