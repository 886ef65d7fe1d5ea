"""Exa Websets monitors: list monitors, list each monitor's runs, get the runs a listing left out.

A run's list entry is the same MonitorRun the get endpoint returns, so one list request per monitor
usually covers all of its runs; pages are followed only while they hold runs not yet finished in the
state. Parsing is our own and tolerant (the SDK's models drop ``failedReason`` and reject ``failed``).
A second Exa flavour (the standalone Monitors API) would be a sibling module, not a branch in here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RUN_STATUSES, RunSnapshot
from runwatch.sources.base import (
    MissingRuns,
    MonitorBatch,
    MonitorListing,
    Page,
    PageShape,
    PollReport,
    ProviderSpec,
    RunView,
    bounded_backlog,
    hand_over,
    parse_time,
    poll_monitors,
    poll_stream,
    pushed_only,
    read_back,
    read_pages,
)
from runwatch.sources.exa_events import EventsCatchUp
from runwatch.sources.http import ApiClient, ApiError
from runwatch.sources.push import ExaPushSettings
from runwatch.sources.schedule import Schedule, next_cron
from runwatch.sources.settings import ProviderSettings

log = get_logger(__name__)

PROVIDER = "exa"
SHAPE = PageShape(items="data", more="hasMore", cursor="nextCursor")
PAGE_LIMIT = 50
#: Pages of one monitor's runs read in one cycle; a longer catch-up goes on next cycle.
MAX_PAGES = 20
#: Monitors per page of the monitor list (the documented maximum), and pages of it at most: 100,000
#: monitors, far beyond any account, so only a server that invents monitors page after page hits it.
LIST_LIMIT = 200
MAX_LIST_PAGES = 500


def parse_run(obj: Any, monitor_id: str) -> RunSnapshot | None:
    """A MonitorRun -> snapshot; None for an object we cannot use (no id, unknown status)."""
    if not isinstance(obj, Mapping):
        return None
    run_id = obj.get("id")
    status = obj.get("status")
    if not isinstance(run_id, str) or not run_id or not isinstance(status, str):
        return None
    if status not in RUN_STATUSES:
        return None
    reason = obj.get("failedReason")
    finished = next(
        (t for t in (parse_time(obj.get(k)) for k in ("completedAt", "failedAt", "canceledAt")) if t), None
    )
    mid = obj.get("monitorId")
    return RunSnapshot(
        provider=PROVIDER,
        monitor_id=mid if isinstance(mid, str) and mid else monitor_id,
        run_id=run_id,
        status=status,
        raw=obj,
        failed_reason=reason if isinstance(reason, str) and reason else None,
        finished_at=finished,
        changed_at=finished or parse_time(obj.get("updatedAt")) or parse_time(obj.get("createdAt")),
        created_at=parse_time(obj.get("createdAt")),
    )


class ExaSettings(ProviderSettings, ExaPushSettings):
    """``providers.exa`` (with its webhook keys: :class:`~runwatch.sources.push.ExaPushSettings`)."""

    base_url: str = "https://api.exa.ai/websets"


def next_run_at(monitor: Mapping[str, Any], now: float) -> float | None:
    """When the monitor's next scheduled run is due: ``nextRunAt``, else its cadence's cron."""
    if (at := parse_time(monitor.get("nextRunAt"))) is not None:
        return at
    cadence = monitor.get("cadence")
    if isinstance(cadence, Mapping) and isinstance(cadence.get("cron"), str):
        tz = cadence.get("timezone")
        return next_cron(cadence["cron"], tz if isinstance(tz, str) else None, now)
    return None


class ExaSource:
    """Polls Exa Websets monitors: the list at the idle pace, each due monitor's runs."""

    provider = PROVIDER

    def __init__(self, settings: ProviderSettings, metrics: Metrics, **client_kw: Any) -> None:
        assert settings.api_key is not None
        self.settings = settings
        self.metrics = metrics
        self.api = ApiClient.for_provider(
            PROVIDER, settings, metrics, lambda key: {"x-api-key": key}, **client_kw
        )
        self.schedule = Schedule(settings.poll_interval, settings.idle_poll_interval)
        self.monitors: list[str] = list(dict.fromkeys(settings.monitors))
        self.missing = MissingRuns(PROVIDER, metrics)
        #: Each monitor's raw object as the last listing showed it (what templates see as ``monitor``).
        self.listed: dict[str, Mapping[str, Any]] = {}
        #: With push on, the events API tells which idle monitors had a run (:mod:`.exa_events`).
        self.events = EventsCatchUp(self.api, settings.poll_interval, settings.idle_poll_interval)

    def _events_on(self) -> bool:
        """The events API stands in for idle polls while Exa push is on (a ``webhook_secret``)."""
        return bool(getattr(self.settings, "webhook_secret", None)) and not self.events.off

    def covered(self) -> float | None:
        """Up to when every listed monitor's runs are known (None: not every one's, or push off):
        what the daemon keeps in the state for a restart's catch-up."""
        return self.events.covered(self.monitors) if self._events_on() else None

    def cover(self, since: float) -> None:
        """After a restart: every monitor the state knows had its runs known up to ``since``."""
        self.events.start = since

    async def aclose(self) -> None:
        await self.api.aclose()

    async def list_monitors(self, now: float) -> dict[str, float | None]:
        """Every monitor of the account (or the configured ones) and its next scheduled run."""
        found: dict[str, float | None] = {}
        raw: dict[str, Mapping[str, Any]] = {}
        pages = read_pages(
            self.api,
            "/v0/monitors",
            {"limit": LIST_LIMIT},
            shape=SHAPE,
            endpoint="list_monitors",
            what="monitor list",
            max_pages=MAX_LIST_PAGES,
        )
        async for page, _ in pages:
            for m in page:
                if isinstance(m, Mapping) and isinstance(m.get("id"), str) and m["id"]:
                    found.setdefault(m["id"], next_run_at(m, now))
                    raw.setdefault(m["id"], m)
                else:
                    self.metrics.poll_errors.labels(PROVIDER, "bad_id").inc()
        if self.settings.monitors:
            wanted = dict.fromkeys(self.settings.monitors)
            self.listed = {mid: m for mid, m in raw.items() if mid in wanted}
            return {mid: found.get(mid) for mid in wanted}
        self.listed = raw
        return found

    def _listing(self, view: RunView, due: Mapping[str, float | None]) -> MonitorListing:
        """The listing as the daemon records it: Exa's list is complete (every page read, or an
        error), so a monitor listed before and absent now is gone."""
        before = set(view.listed_monitors(PROVIDER))
        gone: dict[str, Mapping[str, Any]] = {mid: {} for mid in sorted(before - set(self.listed))}
        return MonitorListing(PROVIDER, dict(self.listed), {m: due.get(m) for m in self.listed}, gone)

    def poll(
        self,
        view: RunView,
        *,
        now: float,
        not_before: float | None,
        watch_due: float = 0.0,
        read_now: Sequence[str] = (),
        only: bool = False,
    ) -> AbstractAsyncContextManager[tuple[MemoryObjectReceiveStream[MonitorBatch], PollReport]]:
        self.schedule.watch_due(watch_due)

        async def produce(send: MemoryObjectSendStream[MonitorBatch], report: PollReport) -> None:
            # A push may name a monitor created since the last listing (every monitor is watched).
            unknown = only and not self.settings.monitors and bool(set(read_now) - set(self.monitors))
            if (self.schedule.listing_due(now) and not only) or not self.monitors or unknown:
                try:
                    listing = await self.list_monitors(now)
                except ApiError as exc:
                    report.errors.append(exc)
                    if not self.monitors:
                        return
                else:
                    self.monitors = list(listing)
                    self.schedule.listed(now, listing)
                    report.listing = self._listing(view, listing)
            idle: list[str] = []
            if only:
                hot = pushed_only(read_now, self.monitors)
            else:
                hot, idle = self.schedule.plan(
                    self.monitors,
                    now,
                    lambda m: bool(view.backlog(PROVIDER, m)) or bool(view.unfinished(PROVIDER, m)),
                    urgent=read_now,
                )
                if self._events_on():
                    idle = await self._sift(view, hot, idle, read_now, now)
            report.idle = len(self.monitors) - len(hot) - len(idle)

            async def one(monitor_id: str) -> None:
                try:
                    batch = await self._poll_monitor(monitor_id, view, not_before, report)
                except ApiError as exc:
                    report.errors.append(exc)
                    return
                self.schedule.polled(monitor_id, now)
                self.events.read_done(monitor_id, now)
                created = [t for t in (parse_time(s.raw.get("createdAt")) for s in batch.snapshots) if t]
                if created:
                    self.schedule.started(monitor_id, max(created))
                report.monitors += 1
                report.snapshots += len(batch.snapshots)
                await hand_over(
                    send,
                    replace(
                        batch,
                        monitor=self.listed.get(monitor_id),
                        last_started=max(created) if created else None,
                        polled_at=now,
                    ),
                )

            await poll_monitors(
                hot,
                idle,
                one,
                api=self.api,
                seconds=self.settings.poll_interval,
                workers=self.settings.concurrency,
                report=report,
            )

        return poll_stream(produce)

    async def _sift(
        self, view: RunView, hot: list[str], idle: list[str], urgent: Sequence[str], now: float
    ) -> list[str]:
        """The idle polls this cycle needs, with the events API on: the monitors its run events name
        first, then those a push asked for, then the idle ones due that the last events read did
        not cover (the rest are marked polled: they keep their phase for the next idle interval)."""
        known = set(view.listed_monitors(PROVIDER)) if self.events.start is not None else set()
        named = await self.events.catch_up(self.monitors, known, now) or set()
        busy = set(hot)
        first = [m for m in self.monitors if m in named and m not in busy]
        pushed = set(urgent)
        rest: list[str] = []
        for m in idle:
            if m in named:
                continue
            if m not in pushed and self.events.skips(m, now):
                self.schedule.polled(m, now)
                self.events.skipped += 1
                continue
            rest.append(m)
        return first + rest

    async def _poll_monitor(
        self, monitor_id: str, view: RunView, not_before: float | None, report: PollReport
    ) -> MonitorBatch:
        """The monitor's runs that are new or unfinished, newest first, paging back until the runs are
        ones already recorded (after any downtime), at most MAX_PAGES a cycle (then on next cycle:
        the batch says where, and which runs came from where the last cycle stopped).
        """
        base = f"/v0/monitors/{quote(monitor_id, safe='')}/runs"
        snaps: dict[str, RunSnapshot] = {}
        resumed: set[str] = set()

        def visit(data: list[Any], older: bool) -> bool:
            news = False
            for obj in data:
                if isinstance(obj, Mapping):
                    rid, status = obj.get("id"), obj.get("status")
                    if (
                        isinstance(rid, str)
                        and isinstance(status, str)
                        and status in RUN_STATUSES
                        and view.is_done(PROVIDER, rid) is True
                    ):
                        continue  # a usable run recorded finished: nothing new, nothing to parse
                snap = parse_run(obj, monitor_id)
                if snap is None:
                    report.skipped += 1
                    self.metrics.poll_errors.labels(PROVIDER, "unusable_run").inc()
                    continue
                created = parse_time(snap.raw.get("createdAt"))
                if not_before is not None and created is not None and created < not_before:
                    continue
                done = view.is_done(PROVIDER, snap.run_id)
                if done is None:
                    news = True
                if done is not True and snap.run_id not in snaps:
                    snaps[snap.run_id] = snap
                    if older:
                        resumed.add(snap.run_id)
            return news

        def listing(start: str | None) -> AsyncGenerator[Page, None]:
            params = {"limit": PAGE_LIMIT}
            return read_pages(
                self.api, base, params, shape=SHAPE, endpoint="list_runs", what="run list", cursor=start
            )

        left = await read_back(listing, view.backlog(PROVIDER, monitor_id), visit, MAX_PAGES)
        retired: list[str] = []
        for run_id in view.unfinished(PROVIDER, monitor_id):
            if run_id in snaps:
                self.missing.seen(run_id)
                continue
            path = f"{base}/{quote(run_id, safe='')}"
            try:
                obj = await self.api.get_json(path, endpoint="get_run")
            except ApiError as exc:
                if exc.reason == "not_found":
                    if self.missing.gone(monitor_id, run_id):
                        retired.append(run_id)
                    continue
                raise
            self.missing.seen(run_id)
            snap = parse_run(obj, monitor_id)
            if snap is not None:
                snaps[run_id] = snap
        return MonitorBatch(
            PROVIDER,
            monitor_id,
            list(snaps.values()),
            retired,
            backlog=bounded_backlog(PROVIDER, monitor_id, left),
            resumed=frozenset(resumed),
        )


SPEC = ProviderSpec(
    name=PROVIDER,
    settings=ExaSettings,
    source=ExaSource,
    key_env="EXA_API_KEY",
    credential="exa_api_key",
    fake="runwatch.fakes.exa:FakeExa",
    real_hosts=("api.exa.ai",),
)
