"""A fake Olostep monitors API, faithful to ``shared/api/olostep.md`` and the run-endpoint seed.

Olostep has no list-runs endpoint: runs are found through ``/events`` (one entry per run here,
appearing as soon as the run logs its first event, so a poller can follow a run in progress) and the
monitor's ``last_run`` (only runs that finished). A run is finished once its ``run_complete`` event
is visible; it has no status field of its own.
"""

from __future__ import annotations

import json
import random
import re
import secrets
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from runwatch.clock import Clock
from runwatch.fakes._base import (
    STREAM_FAULT,
    BadRequest,
    FakeBase,
    RouteSpec,
    decode_cursor,
    encode_cursor,
    json_response,
)
from runwatch.fakes._common import EPS, iso
from runwatch.fakes.faults import Fault
from runwatch.fakes.live import LiveLogs
from runwatch.fakes.push import PushEvent
from runwatch.fakes.scenario import OlostepMonitor, OlostepRun, Scenario

__all__ = ["FakeOlostep"]

_DAY = 86400.0
_MONITOR_ID = re.compile(r"^monitor_")
_RUN_ID = re.compile(r"^run_")
#: Run-endpoint bodies kept per run (see :meth:`_Run.body`).
_BODIES_KEPT = 4

#: status -> (code, type) of Olostep's RFC 7807-like error body.
_ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("validation_error", "invalid_request_error"),
    401: ("invalid_api_key", "authentication_error"),
    402: ("credits_exhausted", "billing_error"),
    403: ("forbidden", "permission_error"),
    404: ("not_found", "invalid_request_error"),
    409: ("conflict", "invalid_request_error"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
    501: ("max_capacity_reached", "api_error"),
}


@dataclass(slots=True)
class _Run:
    id: str
    start: float
    #: When ``run_complete`` becomes visible (None: the run never finishes in this scenario).
    complete_at: float | None
    times: list[float]
    events: list[dict[str, Any]]
    #: Run-endpoint bodies already built, by how many events are visible (see :meth:`body`).
    bodies: dict[int, bytes]
    shuffle: bool
    monitor_id: str
    snapshot: dict[str, Any] | None
    log_group: str
    last_run: dict[str, Any] | None
    error_message: str | None
    entry_running: dict[str, Any]
    entry_done: dict[str, Any]

    def visible_events(self, now: float) -> int:
        return bisect_right(self.times, now + EPS)

    def done(self, now: float) -> bool:
        return self.complete_at is not None and self.complete_at <= now + EPS

    def body(self, k: int) -> bytes:
        """The run endpoint's answer while ``k`` events are visible, built when first asked for.

        Not built for every ``k`` up front: a run of 3,000 events would hold 3,000 bodies of up to
        half a megabyte each. The last few are kept, since a poller asks for the same one again.
        """
        cached = self.bodies.get(k)
        if cached is None:
            cached = self.bodies[k] = _run_body(self, k)
            if len(self.bodies) > _BODIES_KEPT:
                del self.bodies[next(iter(self.bodies))]
        return cached


@dataclass(slots=True)
class _Monitor:
    id: str
    static: dict[str, Any]
    deleted: bool
    runs_by_start: list[_Run] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    finished: list[_Run] = field(default_factory=list)
    finish_times: list[float] = field(default_factory=list)
    runs: dict[str, _Run] = field(default_factory=dict)
    #: When each scheduled (not hand-started) run is due, in order: what ``next_run_at`` announces.
    dues: list[float] = field(default_factory=list)
    #: Status changes: their times, statuses and error messages, in order.
    status_times: list[float] = field(default_factory=list)
    statuses: list[tuple[str, str | None]] = field(default_factory=list)
    added_at: float | None = None
    removed_at: float | None = None
    announce: bool = True

    def status_at(self, now: float) -> tuple[str, str | None, float | None]:
        """Status, error message and when it was set (None: the scenario's initial status)."""
        i = bisect_right(self.status_times, now + EPS)
        if not i:
            return str(self.static["status"]), None, None
        status, error = self.statuses[i - 1]
        return status, error, self.status_times[i - 1]

    def hidden(self, now: float) -> bool:
        """Not in the list (without ``include_deleted``): deleted by then, or purged."""
        return self.purged(now) or self.status_at(now)[0] == "deleted"

    def purged(self, now: float) -> bool:
        """Not there at all: not created yet, or purged."""
        if self.added_at is not None and now + EPS < self.added_at:
            return True
        return self.removed_at is not None and now + EPS >= self.removed_at


def _compile_run(run: OlostepRun, monitor_id: str, t0: float) -> _Run:
    events: list[dict[str, Any]] = []
    complete_at: float | None = None
    for i, ev in enumerate(run.events):
        ts = round((t0 + ev.at) * 1000)
        if ev.type == "run_complete" and complete_at is None:
            complete_at = ev.at
        event = {
            "id": f"evt_{run.id}_{i:04d}",
            "ts": ts,
            "ingestion_ts": ts + 120,
            "stream": ev.stream,
            "message": ev.message or ev.type.replace("_", " "),
            "event": {**ev.data, run.event_key: ev.type},
        }
        for key in ev.omit:
            del event[key]
        events.append(event)
    start = run.events[0].at
    log_group = f"/olostep/monitors/{monitor_id}"
    last_run = None
    if complete_at is not None:
        last_run = {
            "id": run.id,
            "status": run.result,
            "change_detected": run.change_detected,
            "ran_at": iso(t0 + complete_at),
        }
    entry_running = {
        "id": f"mevt_{run.id}",
        "run_id": run.id,
        "created": int(t0 + start),
        "changed": False,
        "summary": None,
        "snapshot_url": None,
    }
    summary = run.summary
    if summary is None:
        summary = (
            run.error_message
            if run.result == "failed"
            else ("Change detected" if run.change_detected else "No change")
        )
    entry_done = {**entry_running, "changed": run.change_detected, "summary": summary}
    compiled = _Run(
        id=run.id,
        start=start,
        complete_at=complete_at,
        times=[ev.at for ev in run.events],
        events=events,
        bodies={},
        shuffle=run.shuffle_events,
        monitor_id=monitor_id,
        snapshot=run.snapshot,
        log_group=log_group,
        last_run=last_run,
        error_message=run.error_message if run.result == "failed" else None,
        entry_running=entry_running,
        entry_done=entry_done,
    )
    return compiled


def _run_body(run: _Run, k: int) -> bytes:
    """The run endpoint's answer while ``k`` events are visible."""
    done = run.complete_at is not None and run.complete_at <= run.times[k - 1]
    events = run.events[:k]
    if run.shuffle and k > 1:
        order = list(range(k))
        random.Random(f"{run.id}:{k}").shuffle(order)
        if order == sorted(order):
            order = order[1:] + order[:1]
        events = [events[i] for i in order]
    body = {
        "monitor_id": run.monitor_id,
        "run_id": run.id,
        "snapshot": run.snapshot if done else None,
        "log_group": run.log_group,
        "events": events,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _compile_monitor(mon: OlostepMonitor, t0: float) -> _Monitor:
    runs = sorted((_compile_run(r, mon.id, t0) for r in mon.runs), key=lambda r: r.start)
    finished = sorted((r for r in runs if r.complete_at is not None), key=lambda r: r.complete_at or 0.0)
    created = int(t0 + min([0.0, *(r.start for r in runs)]) - _DAY)
    static = {
        "id": mon.id,
        "object": "monitor",
        "query": mon.query,
        "status": mon.status,
        "schedule": {
            "frequency": mon.frequency,
            "cron": mon.cron,
            "timezone": mon.timezone,
            "next_run_at": None,
        },
        "last_run": None,
        "error_message": None,
        "created": created,
        "updated": created,
        "webhook": None,
    }
    return _Monitor(
        id=mon.id,
        static=static,
        deleted=mon.status == "deleted",
        runs_by_start=runs,
        starts=[r.start for r in runs],
        finished=finished,
        finish_times=[r.complete_at or 0.0 for r in finished],
        runs={r.id: r for r in runs},
        dues=sorted(
            [
                *(
                    r.events[0].at if r.scheduled_at is None else r.scheduled_at
                    for r in mon.runs
                    if not r.manual
                ),
                *mon.skipped_runs,
            ]
        ),
        status_times=[c.at for c in mon.status_changes],
        statuses=[(c.status, c.error_message) for c in mon.status_changes],
        added_at=mon.added_at,
        removed_at=mon.removed_at,
        announce=mon.announce_next_run,
    )


class FakeOlostep(FakeBase):
    """Olostep's monitor endpoints over a scenario: ``/v1/monitors[/{id}[/events|/runs/{run_id}]]``.

    Route names in :attr:`requests`: ``list_monitors``, ``get_monitor``, ``list_events``, ``get_run``,
    ``agent_logs``, ``not_found``. A monitor with a ``webhook.url`` gets a post when a run of it
    completes (:attr:`pusher`); ``agent-logs?stream=1`` streams its runs' events as they come
    (:attr:`live`, :mod:`runwatch.fakes.live`).
    """

    provider = "olostep"
    prefix = ""
    page_keys = ("data", "has_more", "next_cursor")

    def __init__(self, scenario: Scenario | None = None, clock: Clock | None = None) -> None:
        #: Each monitor's ``webhook.url`` (the scenario's ``webhook_url``, or :meth:`set_webhook`).
        self.webhook_urls: dict[str, str] = {}
        super().__init__(scenario, clock)
        for mon in self.scenario.olostep.monitors:
            if mon.webhook_url is not None:
                self.set_webhook(mon.id, mon.webhook_url)

    def set_webhook(self, monitor_id: str, url: str | None) -> None:
        """Point the monitor's ``webhook.url`` at ``url`` (None: no webhook) from now on: each run of it
        that completes from then on is posted there, unsigned, as Olostep does."""
        for sub in self.pusher.subscriptions:
            if sub.monitor_id == monitor_id:
                sub.active = False
        self.webhook_urls.pop(monitor_id, None)
        if url is not None:
            self.webhook_urls[monitor_id] = url
            self.pusher.subscribe(url, monitor_id=monitor_id, prefix="hook")

    def _push_events(self) -> list[PushEvent]:
        """A run that completes (``run_complete`` visible): its monitor, run, result and when (the body
        is undocumented upstream; ``shared/api/olostep.md`` names these keys)."""
        out: list[PushEvent] = []
        for mon in self._monitors:
            for run in mon.finished:
                assert run.complete_at is not None and run.last_run is not None
                body = {
                    "monitor_id": mon.id,
                    "run_id": run.id,
                    "status": run.last_run["status"],
                    "change_detected": run.last_run["change_detected"],
                    "ran_at": run.last_run["ran_at"],
                }
                data = json.dumps(body, separators=(",", ":")).encode()
                out.append(PushEvent(run.complete_at, f"hook_{run.id}", "run.completed", mon.id, data))
        out.sort(key=lambda e: e.at)
        return out

    def _compile(self) -> None:
        self._monitors = [_compile_monitor(m, self.t0) for m in self.scenario.olostep.monitors]
        self._by_id = {m.id: m for m in self._monitors}
        #: The live-log streams (heartbeat interval, open streams, :meth:`LiveLogs.drop`).
        self.live = LiveLogs(self.clock, self.t0, {m.id: m.runs_by_start for m in self._monitors})

    def _scenario_faults(self) -> Sequence[Fault]:
        return self.scenario.olostep.faults

    def _routes(self) -> list[RouteSpec]:
        return [
            ("/v1/monitors", "list_monitors", self._list_monitors),
            ("/v1/monitors/{monitor_id}", "get_monitor", self._get_monitor),
            ("/v1/monitors/{monitor_id}/events", "list_events", self._list_events),
            ("/v1/monitors/{monitor_id}/runs/{run_id}", "get_run", self._get_run),
            ("/v1/monitors/{monitor_id}/agent-logs", "agent_logs", self._agent_logs),
        ]

    # -- protocol details -----------------------------------------------------------------------------

    def _authorized(self, headers: Headers) -> bool:
        return bool(self._presented_key(headers))

    def _presented_key(self, headers: Headers) -> str:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def _error(self, status: int, message: str, route: str) -> Response:
        # The run endpoint documents a bare ``{error}`` body for 400/404/500; the rest (and auth and
        # rate limits everywhere) use the RFC 7807-like shape.
        if route == "get_run" and status not in (401, 429):
            return json_response({"error": message}, status)
        code, kind = _ERROR_CODES.get(status, ("internal_error", "api_error"))
        body = {
            "object": "error",
            "id": f"err_{secrets.token_hex(8)}",
            "code": code,
            "type": kind,
            "status": status,
            "title": "Invalid API key" if status == 401 else HTTPStatus(status).phrase,
            "detail": message,
        }
        return json_response(body, status)

    # -- state ----------------------------------------------------------------------------------------

    def _monitor_object(self, mon: _Monitor, now: float, *, single: bool) -> dict[str, Any]:
        """GET /v1/monitors/{id} (``single``) or an entry of the list."""
        obj = dict(mon.static)
        due = bisect_right(mon.dues, now + EPS)
        if due < len(mon.dues) and mon.announce:
            # The next scheduled scenario run stands in for the cron's next fire time.
            obj["schedule"] = {**obj["schedule"], "next_run_at": iso(self.t0 + mon.dues[due])}
        with_last_run = single or self.scenario.olostep.list_last_run
        done = bisect_right(mon.finish_times, now + EPS)
        if done:
            last = mon.finished[done - 1]
            obj["error_message"] = last.error_message
            if with_last_run:
                obj["last_run"] = last.last_run
        url = self.webhook_urls.get(mon.id)
        obj["webhook"] = {"url": url} if url is not None else None
        status, error, since = mon.status_at(now)
        if since is not None:
            obj["status"] = status
            obj["updated"] = int(self.t0 + since)
            if error is not None:
                obj["error_message"] = error
        if single:
            # GET /v1/monitors/{id} also counts the monitor's snapshot events (one per run here).
            obj["total_count"] = bisect_right(mon.starts, now + EPS)
        if not with_last_run:
            # Documented on GET /v1/monitors/{id} only; the list leaves it out so clients do not rely on
            # it (unless the scenario says ``list_last_run``).
            del obj["last_run"]
        return obj

    # -- handlers -------------------------------------------------------------------------------------

    async def _list_monitors(self, request: Request, now: float) -> Response:
        include_deleted = request.query_params.get("include_deleted", "").lower() == "true"
        monitors = [
            self._monitor_object(m, now, single=False)
            for m in self._monitors
            if not m.purged(now) and (include_deleted or not (m.deleted or m.hidden(now)))
        ]
        return json_response({"monitors": monitors, "count": len(monitors)})

    async def _get_monitor(self, request: Request, now: float) -> Response:
        mon = self._by_id.get(request.path_params["monitor_id"])
        if mon is None or mon.purged(now):
            return self._error(404, "Monitor not found", "get_monitor")
        return json_response(self._monitor_object(mon, now, single=True))

    async def _list_events(self, request: Request, now: float) -> Response:
        mon = self._by_id.get(request.path_params["monitor_id"])
        if mon is None or mon.purged(now):
            return self._error(404, "Monitor not found", "list_events")
        params = request.query_params
        limit = self.page_limit(request, 25, 100)
        total = bisect_right(mon.starts, now + EPS)
        end = total
        if cursor := params.get("cursor"):
            pos = decode_cursor("events", cursor)
            if pos is None:
                raise BadRequest("invalid cursor")
            end = min(pos, end)
        if params.get("count_only", "").lower() == "true":
            return json_response({"data": [], "has_more": False, "next_cursor": None, "total_count": total})
        low = max(end - limit, 0)
        data = [
            r.entry_done if r.done(now) else r.entry_running for r in reversed(mon.runs_by_start[low:end])
        ]
        return json_response(
            {
                "data": data,
                "has_more": low > 0,
                "next_cursor": encode_cursor("events", low) if low > 0 else None,
                # Olostep sends the total on the first page only (its SDK says so).
                "total_count": None if cursor else total,
            }
        )

    async def _get_run(self, request: Request, now: float) -> Response:
        monitor_id = request.path_params["monitor_id"]
        run_id = request.path_params["run_id"]
        if not _MONITOR_ID.match(monitor_id) or not _RUN_ID.match(run_id):
            return self._error(400, "Invalid monitor_id or run_id", "get_run")
        mon = self._by_id.get(monitor_id)
        if mon is None or mon.purged(now):
            return self._error(404, "Monitor not found", "get_run")
        run = mon.runs.get(run_id)
        k = run.visible_events(now) if run is not None else 0
        if run is None or k == 0:
            return self._error(404, "Run not found", "get_run")
        return Response(run.body(k), media_type="application/json")

    async def _agent_logs(self, request: Request, now: float) -> Response:
        mon = self._by_id.get(request.path_params["monitor_id"])
        if mon is None or mon.purged(now):
            return self._error(404, "Monitor not found", "agent_logs")
        if request.query_params.get("stream") not in ("1", "true"):
            raise BadRequest("this fake serves agent logs as a stream only (stream=1)")
        fault = request.scope.get(STREAM_FAULT)
        return self.live.response(mon.id, request.headers.get("last-event-id"), fault)
