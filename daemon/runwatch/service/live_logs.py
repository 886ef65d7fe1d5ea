"""Live logs: the agent-log streams of Olostep runs in flight, fed through the same pipeline as a poll.

For each monitor with a run recorded unfinished (at most ``providers.olostep.max_streams`` of them;
``live_logs: false`` turns it off), one follower (:class:`~runwatch.sources.olostep_live.LiveLogClient`)
keeps the monitor's stream open. What a stream brings is a batch for that run, through Detect ->
Monitors -> Match -> Lifecycle -> Record like any poll's: each event is reported once, under the id the
poll reports it under, so the poll that follows finds nothing new (and a stream replaying what a poll
already recorded adds nothing). Polling goes on as ever, stream or not: a stream only makes the steps
of a run in flight arrive within a second instead of at the next ``poll_interval``.

A stream is a hint for the rest, never the truth about a run's status:

- ``run_complete`` on the stream records that step and makes the poller read the monitor now (a hint
  in the state, as a push does), which says whether the run completed or failed;
- an event of a run the state does not know yet (a new run) is not fed: the monitor is read now
  instead, so a run is first recorded by a read (in scope, baseline and all), as always;
- an event without an id is not fed either (the poll reports it under an id derived from its content,
  which the stream's copy does not share): the monitor is read now.

Only the provider's leader follows streams, and only once it has read its state afresh (a stream fed
from a stale memory would report again what another instance reported).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from runwatch.clock import Clock
from runwatch.errors import FencedOut
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RunSnapshot
from runwatch.sources.base import MonitorBatch
from runwatch.sources.olostep import FINISH_EVENT, PROVIDER, OlostepSettings
from runwatch.sources.olostep_live import LiveEvent, LiveLogClient, settings_key
from runwatch.sources.settings import ProviderSettings
from runwatch.store.interfaces import Hint, Hints, RunRecord

log = get_logger(__name__)

#: How often (real seconds) the followers are matched with the runs in flight.
REFRESH = 0.5


class RunsInFlight(Protocol):
    """What live logs read of the state: the unfinished runs (memory) and one run's record."""

    @property
    def runs(self) -> Mapping[tuple[str, str], RunRecord]: ...

    def run(self, provider: str, run_id: str) -> RunRecord | None: ...


class LiveLogs:
    """Follows the live-log streams of the runs in flight (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Callable[[], ProviderSettings | None],
        runs: RunsInFlight,
        hints: Hints,
        feed: Callable[[MonitorBatch], Awaitable[None]],
        wake: Callable[[str], None],
        leads: Callable[[str], bool],
        not_before: Callable[[], float],
        metrics: Metrics,
        clock: Clock,
        client_options: Mapping[str, Any],
    ) -> None:
        self.settings = settings
        self.runs = runs
        self.hints = hints
        self.feed = feed
        self.wake = wake
        self.leads = leads
        self.not_before = not_before
        self.metrics = metrics
        self.clock = clock
        self.client_options = client_options
        self.provider = PROVIDER
        self._client: LiveLogClient | None = None
        self._client_key: tuple[object, ...] | None = None
        #: monitor -> the cancel scope of its follower.
        self._followers: dict[str, anyio.CancelScope] = {}
        self._open: set[str] = set()
        self._capped_logged = 0
        #: Steps fed from streams in all (the demo's summary says how many).
        self.fed = 0
        #: Refresh passes done (tests wait for them), and the event a waiting test is woken by.
        self.passes = 0
        self._passed: anyio.Event | None = None
        self._primed = False
        self._prime()

    def _prime(self) -> None:
        """The provider's live-log series at 0, once it is enabled (at the start or by a reload)."""
        if not self._primed and self.settings() is not None:
            self.metrics.prime_live(self.provider)
            self._primed = True

    @property
    def following(self) -> list[str]:
        """The monitors whose stream is followed now (open, or reopening with backoff)."""
        return sorted(self._followers)

    async def wait_passes(self, count: int) -> None:
        """Until ``count`` more refresh passes are done (a test awaits this rather than a timer)."""
        target = self.passes + count
        while self.passes < target:
            if self._passed is None:
                self._passed = anyio.Event()
            await self._passed.wait()

    async def run(self) -> None:
        """Match followers with the runs in flight every REFRESH seconds, until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    try:
                        await self.refresh(tg)
                    except Exception:  # a bug here must not stop the daemon; polling covers the runs
                        log.exception("live.refresh_failed", provider=self.provider)
                    self.passes += 1
                    if self._passed is not None:
                        self._passed.set()
                        self._passed = None
                    await anyio.sleep(REFRESH)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_client()

    async def refresh(self, tg: TaskGroup) -> None:
        """One pass: stop the followers no longer wanted, start the ones missing."""
        self._prime()
        settings = self.settings()
        on = (
            isinstance(settings, OlostepSettings)
            and settings.live_logs
            and settings.api_key is not None
            and self.leads(self.provider)
        )
        if not on:
            self._stop_all()
            await self._close_client()
            return
        assert isinstance(settings, OlostepSettings)
        key = settings_key(settings, settings.max_streams)
        if self._client is None or key != self._client_key:
            self._stop_all()
            await self._close_client()
            self._client = LiveLogClient(
                settings, self.metrics, max_streams=settings.max_streams, **self.client_options
            )
            self._client_key = key
        wanted = self._wanted(settings.max_streams)
        for monitor_id in [m for m in self._followers if m not in wanted]:
            self._followers.pop(monitor_id).cancel()
        for monitor_id in wanted:
            if monitor_id not in self._followers:
                scope = self._followers[monitor_id] = anyio.CancelScope()
                tg.start_soon(self._follow, self._client, monitor_id, scope)

    def _wanted(self, limit: int) -> list[str]:
        """The monitors to follow: those with a run in flight, the ones followed already first, then
        the ones whose newest run started last (a run stuck for days does not hold a stream back
        from a fresh one), at most ``limit``."""
        newest: dict[str, float] = {}
        for (provider, _), rec in self.runs.runs.items():
            if provider == self.provider and not rec.done:
                newest[rec.monitor_id] = max(newest.get(rec.monitor_id, 0.0), rec.created_at)
        order = sorted(newest, key=lambda m: (m not in self._followers, -newest[m], m))
        if len(order) > limit and len(order) != self._capped_logged:
            self._capped_logged = len(order)
            log.info(
                "live.capped",
                provider=self.provider,
                in_flight=len(order),
                max_streams=limit,
                hint="the rest are polled as usual; raise providers.olostep.max_streams to follow more",
            )
        return order[:limit]

    def _stop_all(self) -> None:
        for scope in self._followers.values():
            scope.cancel()
        self._followers.clear()

    async def _close_client(self) -> None:
        client, self._client, self._client_key = self._client, None, None
        if client is not None:
            await client.aclose()

    async def _follow(self, client: LiveLogClient, monitor_id: str, scope: anyio.CancelScope) -> None:
        def opened(is_open: bool) -> None:
            if is_open:
                self._open.add(monitor_id)
            else:
                self._open.discard(monitor_id)
            self.metrics.live_streams.labels(self.provider).set(len(self._open))

        async def deliver(events: list[LiveEvent]) -> None:
            await self.take(monitor_id, events)

        try:
            with scope:
                await client.follow(monitor_id, deliver, opened)
        except Exception:  # a bug in one follower: the next pass starts it again; polling goes on
            log.exception("live.follower_failed", provider=self.provider, monitor_id=monitor_id)
        finally:
            if self._followers.get(monitor_id) is scope:
                del self._followers[monitor_id]

    async def take(self, monitor_id: str, events: list[LiveEvent]) -> None:
        """What one chunk of a stream brought: the events of runs in flight through the pipeline, a
        read of the monitor now for the rest (see the module docstring)."""
        now = self.clock.now()
        by_run: dict[str, list[LiveEvent]] = {}
        reads: list[Hint] = []
        for ev in events:
            if ev.run_id is None or not ev.has_id:
                reads.append(Hint(self.provider, f"live_{monitor_id}", monitor_id, "", "live.read", now))
            else:
                by_run.setdefault(ev.run_id, []).append(ev)
        snapshots: list[RunSnapshot] = []
        for run_id, run_events in by_run.items():
            rec = self.runs.run(self.provider, run_id)
            if rec is None:
                newest = max(e.event.ts_ms for e in run_events) / 1000.0
                if newest >= self.not_before():  # a run the state does not know yet: read it
                    reads.append(Hint(self.provider, f"live_{run_id}", monitor_id, run_id, "live.new", now))
                continue
            if rec.done:
                continue
            fresh = tuple(e.event for e in run_events if e.event.id not in rec.events)
            if not fresh:
                continue
            raw = {"monitor_id": rec.monitor_id, "run_id": run_id}
            snapshots.append(RunSnapshot(PROVIDER, rec.monitor_id, run_id, rec.status, raw, events=fresh))
            if any(e.name == FINISH_EVENT for e in fresh):  # the read says completed or failed
                end = f"live_end_{run_id}"
                reads.append(Hint(self.provider, end, rec.monitor_id, run_id, "live.end", now))
        if snapshots:
            try:
                await self.feed(MonitorBatch(self.provider, monitor_id, snapshots))
            except FencedOut as exc:  # no longer the leader: the next pass stops the streams
                log.warning("live.fenced", provider=self.provider, error=str(exc))
                return
            except Exception:  # not recorded: the next poll reads these events as ever
                log.exception("live.record_failed", provider=self.provider, monitor_id=monitor_id)
                return
            self.fed += sum(len(snap.events) for snap in snapshots)
        added = False
        for hint in reads:
            added |= self.hints.add(hint, renew=True)
        if added:
            self.wake(self.provider)
