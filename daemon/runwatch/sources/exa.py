"""Exa Websets monitors: list monitors, list each monitor's runs, get the runs a listing left out.

A run's list entry is the same MonitorRun the get endpoint returns, so one list request per monitor
usually covers all of its runs; pages are followed only while they hold runs not yet finished in the
state. Parsing is our own and tolerant (the SDK's models drop ``failedReason`` and reject ``failed``).
A second Exa flavour (the standalone Monitors API) would be a sibling module, not a branch in here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RUN_STATUSES, RunSnapshot
from runwatch.sources.base import (
    MissingRuns,
    MonitorBatch,
    PollReport,
    ProviderSpec,
    RunView,
    parse_time,
    poll_stream,
)
from runwatch.sources.http import ApiClient, ApiError
from runwatch.sources.schedule import Schedule, next_cron
from runwatch.sources.settings import ProviderSettings

log = get_logger(__name__)

PROVIDER = "exa"
PAGE_LIMIT = 50
#: Pages of one monitor's runs read in one cycle; a longer catch-up goes on next cycle.
MAX_PAGES = 20
#: A page with more than this many times the items asked for is cut there (and counted).
OVERSIZE = 4


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
    )


class ExaSettings(ProviderSettings):
    """``providers.exa``."""

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
        self.api = ApiClient(
            PROVIDER,
            settings.base_url,
            {"x-api-key": settings.api_key.get_secret_value()},
            metrics,
            timeout=settings.timeout,
            retries=settings.retries,
            concurrency=settings.concurrency,
            max_requests_per_second=settings.max_requests_per_second,
            **client_kw,
        )
        self.schedule = Schedule(settings.poll_interval, settings.idle_poll_interval)
        self.monitors: list[str] = list(dict.fromkeys(settings.monitors))
        #: Where a catch-up that ran out of pages this cycle goes on next cycle.
        self.resume: dict[str, str] = {}
        self.missing = MissingRuns(PROVIDER, metrics)

    async def aclose(self) -> None:
        await self.api.aclose()

    async def list_monitors(self, now: float) -> dict[str, float | None]:
        """Every monitor of the account (or the configured ones) and its next scheduled run."""
        found: dict[str, float | None] = {}
        pages = self._pages("/v0/monitors", {"limit": 200}, "list_monitors", "monitor list")
        async for page, _ in pages:
            for m in page:
                if isinstance(m, Mapping) and isinstance(m.get("id"), str) and m["id"]:
                    found.setdefault(m["id"], next_run_at(m, now))
                else:
                    self.metrics.poll_errors.labels(PROVIDER, "bad_id").inc()
        if self.settings.monitors:
            return {mid: found.get(mid) for mid in dict.fromkeys(self.settings.monitors)}
        return found

    async def _pages(
        self, path: str, params: dict[str, Any], endpoint: str, what: str, cursor: str | None = None
    ) -> AsyncGenerator[tuple[list[Any], str | None], None]:
        """Each page's items and the cursor of the next page; follows ``nextCursor`` while ``hasMore``.

        A cursor seen before ends the listing (a server that loops); so does a missing ``data`` array
        (an error) and, after its first items, a page far beyond the size asked for.
        """
        seen: set[str] = set()
        limit = int(params.get("limit", PAGE_LIMIT))
        while True:
            query = dict(params, cursor=cursor) if cursor else params
            page = await self.api.get_json(path, query, endpoint=endpoint)
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                self.metrics.poll_errors.labels(PROVIDER, "bad_shape").inc()
                raise ApiError(PROVIDER, "bad_shape", f"{what} has no 'data' array", path=path)
            if len(data) > limit * OVERSIZE:
                self.metrics.poll_errors.labels(PROVIDER, "oversize_page").inc()
                log.warning("page.oversize", provider=PROVIDER, path=path, items=len(data), limit=limit)
                data = data[: limit * OVERSIZE]
            nxt = page.get("nextCursor") if page.get("hasMore") else None
            nxt = nxt if isinstance(nxt, str) and nxt else None
            yield data, nxt
            if nxt is None:
                return
            if nxt in seen or nxt == cursor:
                self.metrics.poll_errors.labels(PROVIDER, "cursor_loop").inc()
                log.warning("page.cursor_loop", provider=PROVIDER, path=path)
                return
            seen.add(nxt)
            cursor = nxt

    def poll(
        self, view: RunView, *, now: float, not_before: float | None
    ) -> AbstractAsyncContextManager[tuple[MemoryObjectReceiveStream[MonitorBatch], PollReport]]:
        async def produce(send: MemoryObjectSendStream[MonitorBatch], report: PollReport) -> None:
            if self.schedule.listing_due(now) or not self.monitors:
                try:
                    listing = await self.list_monitors(now)
                except ApiError as exc:
                    report.errors.append(exc)
                    if not self.monitors:
                        return
                else:
                    self.monitors = list(listing)
                    self.schedule.listed(now, listing)
            due = [
                m for m in self.monitors
                if m in self.resume or self.schedule.due(m, now, bool(view.unfinished(PROVIDER, m)))
            ]  # fmt: skip
            report.idle = len(self.monitors) - len(due)

            async def one(monitor_id: str) -> None:
                try:
                    batch = await self._poll_monitor(monitor_id, view, not_before, report)
                except ApiError as exc:
                    report.errors.append(exc)
                    return
                self.schedule.polled(monitor_id, now)
                report.monitors += 1
                report.snapshots += len(batch.snapshots)
                await send.send(batch)

            async with anyio.create_task_group() as tg:
                for mid in due:
                    tg.start_soon(one, mid)

        return poll_stream(produce)

    async def _poll_monitor(
        self, monitor_id: str, view: RunView, not_before: float | None, report: PollReport
    ) -> MonitorBatch:
        """The monitor's runs that are new or unfinished, newest first, paging back until the runs are
        ones already recorded (after any downtime), at most MAX_PAGES a cycle (then on next cycle)."""
        base = f"/v0/monitors/{quote(monitor_id, safe='')}/runs"
        snaps: dict[str, RunSnapshot] = {}
        resume = self.resume.pop(monitor_id, None)
        pages = 0
        cursors = [None, resume] if resume else [None]
        for start in cursors:
            listing = self._pages(base, {"limit": PAGE_LIMIT}, "list_runs", "run list", start)
            async for data, next_cursor in listing:
                pages += 1
                news = False
                for obj in data:
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
                if not news:
                    break  # this page holds only runs already recorded (or out of scope): caught up
                if pages >= MAX_PAGES:
                    if next_cursor:  # go on from here next cycle: catch-up is spread, never cut
                        self.resume[monitor_id] = next_cursor
                    break
            await listing.aclose()
            if pages >= MAX_PAGES:
                break
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
        return MonitorBatch(PROVIDER, monitor_id, list(snaps.values()), retired)


SPEC = ProviderSpec(
    name=PROVIDER,
    settings=ExaSettings,
    source=ExaSource,
    key_env="EXA_API_KEY",
    credential="exa_api_key",
    fake="runwatch.fakes.exa:FakeExa",
    real_hosts=("api.exa.ai",),
)
