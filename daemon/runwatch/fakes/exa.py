"""A fake Exa Websets API (monitors and monitor runs), faithful to ``shared/api/exa.md``.

Served under ``/websets`` so that a client (or the exa-py SDK) configured with the fake's base URL
builds the same paths as against ``https://api.exa.ai/websets``. Every run's states are computed once
at construction; a request is a dict lookup and a bisect on the run's timeline.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from runwatch.fakes._base import BadRequest, FakeBase, RouteSpec, decode_cursor, encode_cursor, json_response
from runwatch.fakes._common import EPS, iso
from runwatch.fakes.faults import Fault
from runwatch.fakes.push import PushEvent, Subscription
from runwatch.fakes.scenario import ExaMonitor, ExaRun

__all__ = ["FakeExa"]

_DAY = 86400.0


@dataclass(slots=True)
class _Run:
    """One run with its MonitorRun object at each step of its timeline."""

    id: str
    times: list[float]
    states: list[dict[str, Any]]
    bodies: list[bytes]

    @property
    def start(self) -> float:
        return self.times[0]

    def index_at(self, now: float) -> int:
        """Which timeline step is current at scenario time ``now`` (-1: not visible yet)."""
        return bisect_right(self.times, now + EPS) - 1


@dataclass(slots=True)
class _Monitor:
    id: str
    position: int
    static: dict[str, Any]
    #: Runs in the order they become visible (by first step), and their first-step times.
    runs_by_start: list[_Run] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    runs: dict[str, _Run] = field(default_factory=dict)
    #: When each scheduled (not hand-started) run is due, in order: what ``nextRunAt`` announces.
    dues: list[float] = field(default_factory=list)
    #: Status changes: their times and statuses, in order.
    status_times: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    added_at: float | None = None
    removed_at: float | None = None
    announce: bool = True

    def gone(self, now: float) -> bool:
        """Not there at ``now``: not created yet, or deleted."""
        if self.added_at is not None and now + EPS < self.added_at:
            return True
        return self.removed_at is not None and now + EPS >= self.removed_at

    def visible(self, now: float) -> int:
        return bisect_right(self.starts, now + EPS)


def _compile_run(run: ExaRun, monitor_id: str, t0: float) -> _Run:
    times = [step.at for step in run.timeline]
    created = iso(t0 + times[0])
    states: list[dict[str, Any]] = []
    done: dict[str, str | None] = {"completed": None, "failed": None, "canceled": None}
    failed_reason: str | None = None
    for step in run.timeline:
        when = iso(t0 + step.at)
        if step.status in done:
            done[step.status] = when
        if step.failed_reason is not None:
            failed_reason = step.failed_reason
        states.append(
            {
                "id": run.id,
                "object": "monitor_run",
                "status": step.status,
                "monitorId": monitor_id,
                "type": run.type,
                "completedAt": done["completed"],
                "failedAt": done["failed"],
                "failedReason": failed_reason,
                "canceledAt": done["canceled"],
                "createdAt": created,
                "updatedAt": when,
            }
        )
    bodies = [json.dumps(s, separators=(",", ":")).encode() for s in states]
    return _Run(run.id, times, states, bodies)


def _compile_monitor(mon: ExaMonitor, position: int, t0: float) -> _Monitor:
    runs = sorted((_compile_run(r, mon.id, t0) for r in mon.runs), key=lambda r: r.start)
    # Created a day before anything happened, so no run predates its monitor.
    created = iso(t0 + min([0.0, *(r.start for r in runs)]) - _DAY)
    config = mon.behavior_config
    if config is None:
        config = {"count": 10, "behavior": "append"} if mon.behavior == "search" else {"target": "contents"}
    static: dict[str, Any] = {
        "id": mon.id,
        "object": "monitor",
        "status": mon.status,
        "websetId": mon.webset_id,
        "cadence": {"cron": mon.cron, "timezone": mon.timezone},
        "behavior": {"type": mon.behavior, "config": config},
        "lastRun": None,
        "nextRunAt": None,
        "metadata": dict(mon.metadata),
        "createdAt": created,
        "updatedAt": created,
    }
    return _Monitor(
        id=mon.id,
        position=position,
        static=static,
        runs_by_start=runs,
        starts=[r.start for r in runs],
        runs={r.id: r for r in runs},
        dues=sorted(
            [
                *(
                    r.timeline[0].at if r.scheduled_at is None else r.scheduled_at
                    for r in mon.runs
                    if not r.manual
                ),
                *mon.skipped_runs,
            ]
        ),
        status_times=[c.at for c in mon.status_changes],
        statuses=[c.status for c in mon.status_changes],
        added_at=mon.added_at,
        removed_at=mon.removed_at,
        announce=mon.announce_next_run,
    )


class FakeExa(FakeBase):
    """Exa's monitor endpoints over a scenario: ``/websets/v0/monitors[/{id}[/runs[/{id}]]]``.

    Route names in :attr:`requests`: ``list_monitors``, ``get_monitor``, ``list_runs``, ``get_run``,
    ``create_webhook``, ``list_webhooks``, ``list_events``, ``not_found``. Webhooks made through
    ``/v0/webhooks`` get the run and monitor events, signed, from their creation on (:attr:`pusher`);
    ``/v0/events`` lists the same events, past ones too.
    """

    provider = "exa"
    prefix = "/websets"

    def _compile(self) -> None:
        self._request_ids = itertools.count(1)
        self._request_id_prefix = secrets.token_hex(4)
        monitors = [_compile_monitor(m, i, self.t0) for i, m in enumerate(self.scenario.exa.monitors)]
        self._monitors = monitors
        self._by_id = {m.id: m for m in monitors}
        self._all_positions = list(range(len(monitors)))
        self._webhook_metadata: dict[str, dict[str, str]] = {}
        self._by_webset: dict[str, list[int]] = {}
        for m in monitors:
            self._by_webset.setdefault(m.static["websetId"], []).append(m.position)

    def _scenario_faults(self) -> Sequence[Fault]:
        return self.scenario.exa.faults

    def _routes(self) -> list[RouteSpec]:
        return [
            ("/v0/monitors", "list_monitors", self._list_monitors),
            ("/v0/monitors/{monitor}", "get_monitor", self._get_monitor),
            ("/v0/monitors/{monitor}/runs", "list_runs", self._list_runs),
            ("/v0/monitors/{monitor}/runs/{run}", "get_run", self._get_run),
            ("/v0/webhooks", "create_webhook", self._create_webhook, "POST"),
            ("/v0/webhooks", "list_webhooks", self._list_webhooks),
            ("/v0/events", "list_events", self._list_events),
        ]

    # -- webhooks ---------------------------------------------------------------------------------------

    def _push_events(self) -> list[PushEvent]:
        """``monitor.run.created`` when a run shows, ``monitor.run.completed`` when it completes (Exa
        sends no event for a failed or canceled run), and ``monitor.created``/``updated``/``deleted``."""
        out: list[PushEvent] = []

        def add(at: float, kind: str, mon: _Monitor, suffix: str, data: dict[str, Any]) -> None:
            eid = f"evt_{suffix}_{kind.rsplit('.', 1)[-1]}"
            envelope = {
                "id": eid,
                "object": "event",
                "type": kind,
                "data": data,
                "createdAt": iso(self.t0 + at),
            }
            out.append(PushEvent(at, eid, kind, mon.id, json.dumps(envelope, separators=(",", ":")).encode()))

        for mon in self._monitors:
            for run in mon.runs_by_start:
                add(run.times[0], "monitor.run.created", mon, run.id, run.states[0])
                done = next((i for i, st in enumerate(run.states) if st["status"] == "completed"), None)
                if done is not None:
                    add(run.times[done], "monitor.run.completed", mon, run.id, run.states[done])
            if mon.added_at is not None:
                add(mon.added_at, "monitor.created", mon, mon.id, self._monitor_object(mon, mon.added_at))
            for i, at in enumerate(mon.status_times):
                add(at, "monitor.updated", mon, f"{mon.id}_{i}", self._monitor_object(mon, at))
            if mon.removed_at is not None:
                add(mon.removed_at, "monitor.deleted", mon, mon.id, self._monitor_object(mon, mon.removed_at))
        out.sort(key=lambda e: e.at)
        return out

    def _sign(self, subscription: Subscription, body: bytes, now: int) -> dict[str, str]:
        """``Exa-Signature: t=<unix>,v1=<hex>``: HMAC-SHA256 of ``"<t>.<raw body>"`` keyed with the
        secret's UTF-8 bytes, lower-case hex (written out here, not shared with runwatch's verifier)."""
        if subscription.secret is None:
            return {}
        digest = hmac.new(subscription.secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Exa-Signature": f"t={now},v1={digest}"}

    def _webhook_object(self, sub: Subscription, *, with_secret: bool) -> dict[str, Any]:
        created = iso(self.t0 + sub.since)
        return {
            "id": sub.id,
            "object": "webhook",
            "status": "active" if sub.active else "inactive",
            "events": sorted(sub.types),
            "url": sub.url,
            "secret": sub.secret if with_secret else None,
            "metadata": self._webhook_metadata.get(sub.id, {}),
            "createdAt": created,
            "updatedAt": created,
        }

    async def _create_webhook(self, request: Request, now: float) -> Response:
        """``POST /v0/webhooks {events, url, metadata?}``: the webhook, with its signing secret (the only
        time the secret is shown)."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        events = body.get("events") if isinstance(body, dict) else None
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events or not all(isinstance(e, str) and e for e in events):
            raise BadRequest("events must be a non-empty list of event types")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BadRequest("url must be an http(s) URL")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadRequest("metadata must be an object")
        sub = self.pusher.subscribe(url, events, secret=secrets.token_hex(32), prefix="webhook")
        self._webhook_metadata[sub.id] = {str(k): str(v) for k, v in metadata.items()}
        return json_response(self._webhook_object(sub, with_secret=True))

    async def _list_webhooks(self, request: Request, now: float) -> Response:
        """``GET /v0/webhooks``: every webhook of the account, without secrets, paged as the rest."""
        limit = self.page_limit(request, 25, 200)
        start = 0
        if cursor := request.query_params.get("cursor"):
            pos = decode_cursor("webhooks", cursor)
            if pos is None:
                raise BadRequest("invalid cursor")
            start = pos
        subs = self.pusher.subscriptions
        page = subs[start : start + limit]
        more = start + limit < len(subs)
        return json_response(
            {
                "data": [self._webhook_object(s, with_secret=False) for s in page],
                "hasMore": more,
                "nextCursor": encode_cursor("webhooks", start + limit) if more else None,
            }
        )

    async def _list_events(self, request: Request, now: float) -> Response:
        """``GET /v0/events``: every event of the scenario up to now (the webhooks' envelopes), newest
        first; ``types`` (repeated, or comma-separated), ``createdAfter``/``createdBefore`` (ISO 8601,
        inclusive), ``limit`` (1..200) and ``cursor`` as Exa's reference documents them."""
        params = request.query_params
        limit = self.page_limit(request, 25, 200)
        types = {t for raw in params.getlist("types") for t in raw.split(",") if t}
        after, before = _iso_param(params.get("createdAfter")), _iso_param(params.get("createdBefore"))
        events = self.pusher.events
        end = bisect_right([e.at for e in events], now + EPS)
        if cursor := params.get("cursor"):
            pos = decode_cursor("events", cursor)
            if pos is None:
                raise BadRequest("invalid cursor")
            end = min(pos, end)
        page: list[dict[str, Any]] = []
        i = end - 1
        more = False
        while i >= 0:
            event, at = events[i], self.t0 + events[i].at
            if after is not None and at + EPS < after:
                break  # newest first: everything older is out of the window too
            if (not types or event.type in types) and (before is None or at <= before + EPS):
                if len(page) == limit:
                    more = True
                    break
                page.append(json.loads(event.body))
            i -= 1
        return json_response(
            {"data": page, "hasMore": more, "nextCursor": encode_cursor("events", i + 1) if more else None}
        )

    # -- protocol details -----------------------------------------------------------------------------

    def _authorized(self, headers: Headers) -> bool:
        return bool(self._presented_key(headers))

    def _presented_key(self, headers: Headers) -> str:
        if key := headers.get("x-api-key", "").strip():
            return key
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def _new_request_id(self) -> str:
        return f"req_{self._request_id_prefix}{next(self._request_ids):08x}"

    def _error(self, status: int, message: str, route: str) -> Response:
        request_id = self._new_request_id()
        body = {"requestId": request_id, "error": HTTPStatus(status).phrase, "message": message}
        return json_response(body, status, {"X-Request-Id": request_id})

    def _finish(self, response: Response) -> None:
        if "x-request-id" not in response.headers:
            response.headers["X-Request-Id"] = self._new_request_id()

    # -- state ----------------------------------------------------------------------------------------

    def _monitor_object(self, mon: _Monitor, now: float) -> dict[str, Any]:
        n = mon.visible(now)
        obj = dict(mon.static)
        if n:
            last = mon.runs_by_start[n - 1]
            obj["lastRun"] = last.states[last.index_at(now)]
        due = bisect_right(mon.dues, now + EPS)
        if due < len(mon.dues) and mon.announce:
            # The next scheduled scenario run stands in for the cron's next fire time.
            obj["nextRunAt"] = iso(self.t0 + mon.dues[due])
        changed = bisect_right(mon.status_times, now + EPS)
        if changed:
            obj["status"] = mon.statuses[changed - 1]
            obj["updatedAt"] = iso(self.t0 + mon.status_times[changed - 1])
        return obj

    def _monitor(self, request: Request) -> _Monitor | None:
        mon = self._by_id.get(request.path_params["monitor"])
        return None if mon is None or mon.gone(self.scenario_time()) else mon

    # -- handlers -------------------------------------------------------------------------------------

    async def _list_monitors(self, request: Request, now: float) -> Response:
        params = request.query_params
        limit = self.page_limit(request, 25, 200)
        start = 0
        if cursor := params.get("cursor"):
            pos = decode_cursor("monitors", cursor)
            if pos is None:
                raise BadRequest("invalid cursor")
            start = pos
        webset = params.get("websetId")
        positions = self._by_webset.get(webset, []) if webset else self._all_positions
        positions = [p for p in positions if not self._monitors[p].gone(now)]
        first = bisect_left(positions, start)
        page = positions[first : first + limit]
        has_more = first + limit < len(positions)
        return json_response(
            {
                "data": [self._monitor_object(self._monitors[p], now) for p in page],
                "hasMore": has_more,
                "nextCursor": encode_cursor("monitors", page[-1] + 1) if has_more else None,
            }
        )

    async def _get_monitor(self, request: Request, now: float) -> Response:
        mon = self._monitor(request)
        if mon is None:
            return self._error(404, f"Monitor {request.path_params['monitor']} not found", "get_monitor")
        return json_response(self._monitor_object(mon, now))

    async def _list_runs(self, request: Request, now: float) -> Response:
        mon = self._monitor(request)
        if mon is None:
            return self._error(404, f"Monitor {request.path_params['monitor']} not found", "list_runs")
        params = request.query_params
        limit = self.page_limit(request, 25, 200)
        # Newest first; a cursor is the (exclusive) start position in visibility order, so runs that
        # appear while a client pages do not shift the pages it has not read yet.
        end = mon.visible(now)
        if cursor := params.get("cursor"):
            pos = decode_cursor("runs", cursor)
            if pos is None:
                raise BadRequest("invalid cursor")
            end = min(pos, end)
        low = max(end - limit, 0)
        data = []
        for run in reversed(mon.runs_by_start[low:end]):
            data.append(run.states[run.index_at(now)])
        return json_response(
            {"data": data, "hasMore": low > 0, "nextCursor": encode_cursor("runs", low) if low > 0 else None}
        )

    async def _get_run(self, request: Request, now: float) -> Response:
        mon = self._monitor(request)
        run = mon.runs.get(request.path_params["run"]) if mon is not None else None
        index = run.index_at(now) if run is not None else -1
        if run is None or index < 0:
            what = "Monitor" if mon is None else "Monitor run"
            return self._error(404, f"{what} not found", "get_run")
        return Response(run.bodies[index], media_type="application/json")


def _iso_param(value: str | None) -> float | None:
    """An ISO 8601 query parameter -> unix seconds (400 when it is not one)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{value!r} is not an ISO 8601 datetime") from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
