"""Exa Websets monitors: list monitors, list each monitor's runs, get the runs a listing left out.

A run's list entry is the same MonitorRun the get endpoint returns, so one list request per monitor
usually covers all of its runs; pages are followed only while they hold runs not yet finished in the
state. Parsing is our own and tolerant (the SDK's models drop ``failedReason`` and reject ``failed``).
A second Exa flavour (the standalone Monitors API) would be a sibling module, not a branch in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import anyio

from runwatch.config import ProviderSettings
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RUN_STATUSES, RunSnapshot
from runwatch.sources.base import Emit, KnownRuns, MonitorBatch, PollReport, parse_time, unfinished_by_monitor
from runwatch.sources.http import ApiClient, ApiError

log = get_logger(__name__)

PROVIDER = "exa"
PAGE_LIMIT = 50
MAX_PAGES = 20


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


class ExaSource:
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
            **client_kw,
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    async def list_monitors(self) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = await self.api.get_json("/v0/monitors", params, endpoint="list_monitors")
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                raise ApiError(PROVIDER, "bad_shape", "monitor list has no 'data' array", path="/v0/monitors")
            ids.extend(m["id"] for m in data if isinstance(m, Mapping) and isinstance(m.get("id"), str))
            cursor = page.get("nextCursor")
            if not page.get("hasMore") or not cursor:
                break
        return ids

    async def poll(self, known: KnownRuns, emit: Emit, *, not_before: float | None) -> PollReport:
        report = PollReport()
        try:
            monitors = list(self.settings.monitors) or await self.list_monitors()
        except ApiError as exc:
            report.errors.append(exc)
            return report
        unfinished = unfinished_by_monitor(known, PROVIDER)

        async def one(monitor_id: str) -> None:
            try:
                snaps = await self._poll_monitor(
                    monitor_id, known, unfinished.get(monitor_id, []), not_before, report
                )
            except ApiError as exc:
                report.errors.append(exc)
                return
            report.monitors += 1
            report.snapshots += len(snaps)
            await emit(MonitorBatch(PROVIDER, monitor_id, snaps))

        async with anyio.create_task_group() as tg:
            for mid in monitors:
                tg.start_soon(one, mid)
        return report

    async def _poll_monitor(
        self,
        monitor_id: str,
        known: KnownRuns,
        unfinished: list[str],
        not_before: float | None,
        report: PollReport,
    ) -> list[RunSnapshot]:
        base = f"/v0/monitors/{quote(monitor_id, safe='')}/runs"
        snaps: dict[str, RunSnapshot] = {}
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            page = await self.api.get_json(base, params, endpoint="list_runs")
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                raise ApiError(PROVIDER, "bad_shape", "run list has no 'data' array", path=base)
            anything_open = False
            for obj in data:
                snap = parse_run(obj, monitor_id)
                if snap is None:
                    report.skipped += 1
                    self.metrics.poll_errors.labels(PROVIDER, "unusable_run").inc()
                    continue
                created = parse_time(snap.raw.get("createdAt"))
                if not_before is not None and created is not None and created < not_before:
                    continue
                rec = known.run(PROVIDER, snap.run_id)
                if rec is not None and rec.done:
                    continue
                anything_open = True
                snaps[snap.run_id] = snap
            cursor = page.get("nextCursor")
            if not page.get("hasMore") or not cursor or not anything_open:
                break
        for run_id in unfinished:
            if run_id in snaps:
                continue
            path = f"{base}/{quote(run_id, safe='')}"
            try:
                obj = await self.api.get_json(path, endpoint="get_run")
            except ApiError as exc:
                if exc.reason == "not_found":
                    log.warning("run.vanished", provider=PROVIDER, monitor_id=monitor_id, run_id=run_id)
                    continue
                raise
            snap = parse_run(obj, monitor_id)
            if snap is not None:
                snaps[run_id] = snap
        return list(snaps.values())
