"""Olostep monitors: discover run ids (no list-runs endpoint), fetch unfinished runs, derive status.

Run ids come from each monitor's ``/events`` (newest first) and its ``last_run``. A run has no status
field: it is ``running`` until a ``run_complete`` event (or the monitor's ``last_run``) says it ended,
then ``completed`` or ``failed``. The step name of an AgentLogEvent is read from ``event.type``, else
``event.event``, else ``event.name``, else the first word of ``message``: the vocabulary is open.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import anyio

from runwatch.config import ProviderSettings
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RunEvent, RunSnapshot
from runwatch.sources.base import Emit, KnownRuns, MonitorBatch, PollReport, parse_time, unfinished_by_monitor
from runwatch.sources.http import ApiClient, ApiError

log = get_logger(__name__)

PROVIDER = "olostep"
MONITOR_ID = re.compile(r"^monitor_[A-Za-z0-9_-]+$")
RUN_ID = re.compile(r"^run_[A-Za-z0-9_-]+$")
EVENTS_PAGE = 25
MAX_EVENT_PAGES = 8
FINISH_EVENT = "run_complete"
_ERROR_NAMES = re.compile(r"(?i)(^|_)(error|failed|failure|run_failed)$")


def event_name(obj: Mapping[str, Any]) -> str:
    inner = obj.get("event")
    if isinstance(inner, Mapping):
        for key in ("type", "event", "name"):
            v = inner.get(key)
            if isinstance(v, str) and v:
                return v
    msg = obj.get("message")
    if isinstance(msg, str) and msg.split():
        return msg.split()[0]
    return "unknown"


def _event_error(name: str, inner: Mapping[str, Any], message: str) -> str | None:
    err = inner.get("error")
    if err:
        return err if isinstance(err, str) else str(err)
    if inner.get("status") == "failed":
        return str(inner.get("detail") or inner.get("reason") or message or "failed")
    if _ERROR_NAMES.search(name):
        return message or name
    return None


def parse_event(obj: Any) -> RunEvent | None:
    if not isinstance(obj, Mapping):
        return None
    eid = obj.get("id")
    if not isinstance(eid, str | int) or eid == "":
        return None
    ts = obj.get("ts")
    ts_ms = int(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else 0
    inner = obj.get("event") if isinstance(obj.get("event"), Mapping) else {}
    assert isinstance(inner, Mapping)
    message = obj.get("message") if isinstance(obj.get("message"), str) else ""
    assert isinstance(message, str)
    name = event_name(obj)
    return RunEvent(
        id=str(eid),
        ts_ms=ts_ms,
        name=name,
        message=message,
        raw=obj,
        error=_event_error(name, inner, message),
    )


def derive(
    monitor_id: str,
    run_id: str,
    detail: Mapping[str, Any],
    last_run: Mapping[str, Any] | None,
    monitor_error: str | None,
) -> RunSnapshot:
    """A run's detail (+ the monitor's last_run, when it names this run) -> snapshot with a status."""
    raw_events = detail.get("events")
    events = tuple(
        e
        for e in (parse_event(o) for o in (raw_events if isinstance(raw_events, list) else []))
        if e is not None
    )
    finished = [e for e in events if e.name == FINISH_EVENT]
    errors = [e.error for e in events if e.error]
    lr_status = last_run.get("status") if last_run and last_run.get("id") == run_id else None
    status = "running"
    failed_reason: str | None = None
    finished_at: float | None = None
    if finished or lr_status in ("completed", "failed"):
        failed = bool(errors) or lr_status == "failed"
        status = "failed" if failed else "completed"
        if failed:
            failed_reason = (errors[-1] if errors else None) or monitor_error or "run failed"
        finished_at = (
            (max(e.ts_ms for e in finished) / 1000.0)
            if finished
            else parse_time(last_run.get("ran_at") if last_run else None)
        )
    raw = dict(detail)
    raw.setdefault("monitor_id", monitor_id)
    raw.setdefault("run_id", run_id)
    if lr_status:
        raw["last_run"] = dict(last_run or {})
    return RunSnapshot(
        provider=PROVIDER,
        monitor_id=monitor_id,
        run_id=run_id,
        status=status,
        raw=raw,
        failed_reason=failed_reason,
        finished_at=finished_at,
        events=events,
    )


class OlostepSource:
    provider = PROVIDER

    def __init__(self, settings: ProviderSettings, metrics: Metrics, **client_kw: Any) -> None:
        assert settings.api_key is not None
        self.settings = settings
        self.metrics = metrics
        self.api = ApiClient(
            PROVIDER,
            settings.base_url,
            {"authorization": f"Bearer {settings.api_key.get_secret_value()}"},
            metrics,
            timeout=settings.timeout,
            retries=settings.retries,
            concurrency=settings.concurrency,
            **client_kw,
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    async def list_monitors(self) -> list[str]:
        body = await self.api.get_json("/v1/monitors", endpoint="list_monitors")
        items = body.get("monitors", body.get("data")) if isinstance(body, Mapping) else body
        if not isinstance(items, list):
            raise ApiError(PROVIDER, "bad_shape", "monitor list has no 'monitors' array", path="/v1/monitors")
        ids: list[str] = []
        for m in items:
            mid = (m.get("id") or m.get("monitor_id")) if isinstance(m, Mapping) else None
            if isinstance(mid, str) and MONITOR_ID.match(mid):
                if m.get("status") != "deleted":
                    ids.append(mid)
            else:
                self.metrics.poll_errors.labels(PROVIDER, "bad_id").inc()
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
                    monitor_id, known, unfinished.get(monitor_id, []), not_before
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

    async def _discover(self, mpath: str, known: KnownRuns, not_before: float | None) -> list[str]:
        """Run ids from the monitor's events, newest first, paging only while pages hold new runs."""
        found: list[str] = []
        cursor: str | None = None
        for _ in range(MAX_EVENT_PAGES):
            params: dict[str, Any] = {"limit": EVENTS_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = await self.api.get_json(f"{mpath}/events", params, endpoint="list_events")
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                raise ApiError(
                    PROVIDER, "bad_shape", "events list has no 'data' array", path=f"{mpath}/events"
                )
            new_here = False
            for ev in data:
                rid = ev.get("run_id") if isinstance(ev, Mapping) else None
                if not isinstance(rid, str):
                    continue
                created = parse_time(ev.get("created"))
                if not_before is not None and created is not None and created < not_before:
                    continue
                rec = known.run(PROVIDER, rid)
                if rec is None or not rec.done:
                    new_here = True
                    found.append(rid)
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor or not new_here:
                break
        return found

    async def _poll_monitor(
        self, monitor_id: str, known: KnownRuns, unfinished: list[str], not_before: float | None
    ) -> list[RunSnapshot]:
        if not MONITOR_ID.match(monitor_id):
            raise ApiError(PROVIDER, "bad_id", f"{monitor_id!r} is not an Olostep monitor id")
        mpath = f"/v1/monitors/{quote(monitor_id, safe='')}"
        monitor = await self.api.get_json(mpath, endpoint="get_monitor")
        monitor = monitor if isinstance(monitor, Mapping) else {}
        last_run = monitor.get("last_run") if isinstance(monitor.get("last_run"), Mapping) else None
        err = monitor.get("error_message")
        monitor_error = err if isinstance(err, str) and err else None
        candidates = await self._discover(mpath, known, not_before)
        if last_run and isinstance(last_run.get("id"), str):
            rec = known.run(PROVIDER, last_run["id"])
            ran_at = parse_time(last_run.get("ran_at"))
            in_scope = not_before is None or ran_at is None or ran_at >= not_before
            if (rec is None or not rec.done) and in_scope:
                candidates.append(last_run["id"])
        candidates.extend(unfinished)
        snaps: list[RunSnapshot] = []
        for run_id in dict.fromkeys(candidates):
            if not RUN_ID.match(run_id):
                self.metrics.poll_errors.labels(PROVIDER, "bad_id").inc()
                continue
            try:
                detail = await self.api.get_json(f"{mpath}/runs/{quote(run_id, safe='')}", endpoint="get_run")
            except ApiError as exc:
                if exc.reason == "not_found":
                    log.warning("run.vanished", provider=PROVIDER, monitor_id=monitor_id, run_id=run_id)
                    continue
                raise
            if not isinstance(detail, Mapping):
                self.metrics.poll_errors.labels(PROVIDER, "bad_shape").inc()
                continue
            snaps.append(derive(monitor_id, run_id, detail, last_run, monitor_error))
        return snaps
