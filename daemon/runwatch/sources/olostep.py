"""Olostep monitors: discover run ids (no list-runs endpoint), fetch unfinished runs, derive status.

Run ids come from each monitor's ``/events`` (newest first) and its ``last_run``. A run has no status
field: it is ``running`` until a ``run_complete`` event (or the monitor's ``last_run``) says it ended,
then ``completed`` or ``failed``. The step name of an AgentLogEvent is read from ``event.type``, else
``event.event``, else ``event.name``, else the first word of ``message``: the vocabulary is open.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, TypeGuard
from urllib.parse import quote

import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import field_validator

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RunEvent, RunSnapshot
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
    read_back,
    read_pages,
)
from runwatch.sources.http import ApiClient, ApiError
from runwatch.sources.schedule import Schedule, next_cron
from runwatch.sources.settings import ProviderSettings

log = get_logger(__name__)

PROVIDER = "olostep"
MONITOR_ID = re.compile(r"^monitor_[A-Za-z0-9_-]+$")
RUN_ID = re.compile(r"^run_[A-Za-z0-9_-]+$")
SHAPE = PageShape(items="data", more="has_more", cursor="next_cursor", ids=("id", "run_id"))
EVENTS_PAGE = 25
#: Event pages of one monitor read in one cycle (each new run shows in the first pages).
MAX_EVENT_PAGES = 40
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


def _canonical(obj: Mapping[str, Any]) -> bytes:
    """The event as bytes that do not depend on key order (orjson; json for what orjson refuses,
    such as integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(obj, sort_keys=True, default=str).encode()


def _is_time(ts: Any) -> TypeGuard[int | float]:
    return isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts)


def event_gaps(raw_events: Any) -> set[str]:
    """What the AgentLogEvents of one answer lack: ``event_no_id``, ``event_no_ts`` (counted once per
    answer in ``poll_errors``; such events are still reported, under an id derived from their content
    and in ``ts`` order with the undated ones first)."""
    gaps: set[str] = set()
    for obj in raw_events if isinstance(raw_events, list) else ():
        if isinstance(obj, Mapping):
            eid = obj.get("id")
            if not isinstance(eid, str | int) or isinstance(eid, bool) or eid == "":
                gaps.add("event_no_id")
            if not _is_time(obj.get("ts")):
                gaps.add("event_no_ts")
    return gaps


def parse_event(obj: Any) -> RunEvent | None:
    if not isinstance(obj, Mapping):
        return None
    eid = obj.get("id")
    if not isinstance(eid, str | int) or isinstance(eid, bool) or eid == "":
        # No id: one derived from the event's content is stable across polls, so it is reported once.
        eid = "derived_" + hashlib.sha256(_canonical(obj)).hexdigest()[:24]
    ts = obj.get("ts")
    ts_ms = int(ts) if _is_time(ts) else 0
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
    # The run's own fields: its events are in ``events`` above, each reported as a change of its own
    # (``event``), and a copy of the whole list in every one of those would grow with the run.
    raw = {k: v for k, v in detail.items() if k != "events"}
    raw.setdefault("monitor_id", monitor_id)
    raw.setdefault("run_id", run_id)
    if lr_status:
        raw["last_run"] = dict(last_run or {})
    started = min((e.ts_ms for e in events if e.ts_ms > 0), default=0)
    return RunSnapshot(
        provider=PROVIDER,
        monitor_id=monitor_id,
        run_id=run_id,
        status=status,
        raw=raw,
        failed_reason=failed_reason,
        finished_at=finished_at,
        events=events,
        changed_at=finished_at if finished_at is not None else (started / 1000.0 if started else None),
        created_at=started / 1000.0 if started else None,  # no created time: its first dated event
    )


def run_start(snap: RunSnapshot) -> float | None:
    """When a run began (unix seconds): its first dated event. Olostep runs carry no created time."""
    first = min((e.ts_ms for e in snap.events if e.ts_ms > 0), default=0)
    return first / 1000.0 if first else None


class OlostepSettings(ProviderSettings):
    """``providers.olostep``."""

    base_url: str = "https://api.olostep.com"

    @field_validator("monitors")
    @classmethod
    def prefixed_decision(cls, v: list[str]) -> list[str]:
        for mid in v:
            if not mid.startswith("monitor_"):
                raise ValueError(f"{mid!r} is not an Olostep monitor id (they start with 'monitor_')")
        return v


def next_run_at(monitor: Mapping[str, Any], now: float) -> float | None:
    """``schedule.next_run_at``, else the schedule's cron in its time zone (old flat shape too)."""
    sched = monitor.get("schedule") if isinstance(monitor.get("schedule"), Mapping) else monitor
    assert isinstance(sched, Mapping)
    if (at := parse_time(sched.get("next_run_at"))) is not None:
        return at
    cron = sched.get("cron") or sched.get("cron_expression")
    tz = sched.get("timezone")
    if isinstance(cron, str):
        return next_cron(cron, tz if isinstance(tz, str) else None, now)
    return None


class OlostepSource:
    """Polls Olostep monitors: the list, each due monitor's ``last_run``, its events and the runs not
    finished yet.

    ``last_run`` is documented on ``GET /v1/monitors/{id}`` only: when the list does not carry it, the
    list is read at the idle pace and each monitor polled is read on its own (which also says when its
    next run is due); when it does, one list request each cycle stands in for all those GETs.
    """

    provider = PROVIDER

    def __init__(self, settings: ProviderSettings, metrics: Metrics, **client_kw: Any) -> None:
        assert settings.api_key is not None
        self.settings = settings
        self.metrics = metrics
        self.api = ApiClient.for_provider(
            PROVIDER, settings, metrics, lambda key: {"authorization": f"Bearer {key}"}, **client_kw
        )
        self.schedule = Schedule(settings.poll_interval, settings.idle_poll_interval)
        self.monitors: dict[str, Mapping[str, Any]] = {}
        #: Whether the last listing carried each monitor's ``last_run`` (then no GET per monitor).
        self.list_has_last_run = False
        self.missing = MissingRuns(PROVIDER, metrics)
        #: Monitors the last listing showed with ``status: deleted`` (a list that includes them).
        self.listed_deleted: dict[str, Mapping[str, Any]] = {}

    async def aclose(self) -> None:
        await self.api.aclose()

    async def list_monitors(self) -> dict[str, Mapping[str, Any]]:
        """Live monitors by id (one request: the list has no pagination), the configured ones only."""
        body = await self.api.get_json("/v1/monitors", endpoint="list_monitors")
        items = body.get("monitors", body.get("data")) if isinstance(body, Mapping) else body
        if not isinstance(items, list):
            self.metrics.poll_errors.labels(PROVIDER, "bad_shape").inc()
            raise ApiError(PROVIDER, "bad_shape", "monitor list has no 'monitors' array", path="/v1/monitors")
        found: dict[str, Mapping[str, Any]] = {}
        self.listed_deleted = {}
        for m in items:
            mid = (m.get("id") or m.get("monitor_id")) if isinstance(m, Mapping) else None
            if isinstance(mid, str) and MONITOR_ID.match(mid):
                if m.get("status") != "deleted":
                    found.setdefault(mid, m)
                else:
                    self.listed_deleted.setdefault(mid, m)
            else:
                self.metrics.poll_errors.labels(PROVIDER, "bad_id").inc()
        if self.settings.monitors:
            return {mid: found.get(mid, {}) for mid in dict.fromkeys(self.settings.monitors)}
        return found

    def poll(
        self, view: RunView, *, now: float, not_before: float | None, watch_due: float = 0.0
    ) -> AbstractAsyncContextManager[tuple[MemoryObjectReceiveStream[MonitorBatch], PollReport]]:
        self.schedule.watch_due(watch_due)

        async def produce(send: MemoryObjectSendStream[MonitorBatch], report: PollReport) -> None:
            def due_now(monitors: Iterable[str]) -> tuple[list[str], list[str]]:
                return self.schedule.plan(
                    monitors,
                    now,
                    lambda m: bool(view.backlog(PROVIDER, m)) or bool(view.unfinished(PROVIDER, m)),
                )

            hot, idle = due_now(self.monitors or self.settings.monitors)
            due = hot or idle
            # The list is read at the idle pace; and each cycle something is due if it carries
            # last_run (one request then saves a GET of each monitor due).
            if self.schedule.listing_due(now) or not self.monitors or (due and self.list_has_last_run):
                try:
                    listing = await self.list_monitors()
                except ApiError as exc:
                    report.errors.append(exc)
                    if not self.monitors:
                        return
                else:
                    before = {m for m, obj in self.monitors.items() if obj}
                    self.monitors = listing
                    report.listing = await self._listing(view, before, now)
                    self.list_has_last_run = any("last_run" in m for m in listing.values())
                    self.schedule.listed(now, {m: next_run_at(obj, now) for m, obj in listing.items()})
                    hot, idle = due_now(self.monitors)
            report.idle = len(self.monitors) - len(hot) - len(idle)

            async def one(monitor_id: str) -> None:
                try:
                    batch = await self._poll_monitor(monitor_id, view, now, not_before)
                except ApiError as exc:
                    report.errors.append(exc)
                    return
                self.schedule.polled(monitor_id, now)
                started = [t for t in map(run_start, batch.snapshots) if t is not None]
                if started:
                    self.schedule.started(monitor_id, max(started))
                report.monitors += 1
                report.snapshots += len(batch.snapshots)
                await hand_over(send, replace(batch, last_started=max(started) if started else None))

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

    async def _listing(self, view: RunView, before: set[str], now: float) -> MonitorListing:
        """The listing as the daemon records it. The list holds live monitors only, and Olostep's docs
        say to check with a GET before calling a vanished one gone: 404 or ``status: deleted``
        confirms it; any other answer leaves it unknown this cycle (asked again next listing)."""
        live = {mid: obj for mid, obj in self.monitors.items() if obj}
        absent = (set(view.listed_monitors(PROVIDER)) | before) - set(live)
        if self.settings.monitors:
            absent &= set(self.settings.monitors)
        gone: dict[str, Mapping[str, Any]] = {}
        for mid in sorted(absent):
            if mid in self.listed_deleted:
                gone[mid] = self.listed_deleted[mid]
                continue
            if not MONITOR_ID.match(mid):
                continue
            try:
                got = await self.api.get_json(f"/v1/monitors/{quote(mid, safe='')}", endpoint="get_monitor")
            except ApiError as exc:
                if exc.reason == "not_found":
                    gone[mid] = {}
                else:
                    log.warning("monitor.unconfirmed", provider=PROVIDER, monitor_id=mid, reason=exc.reason)
                continue
            if isinstance(got, Mapping) and got.get("status") == "deleted":
                gone[mid] = got
        due = {mid: next_run_at(obj, now) for mid, obj in live.items()}
        return MonitorListing(PROVIDER, live, due, gone)

    async def _discover(
        self, monitor_id: str, mpath: str, view: RunView, not_before: float | None
    ) -> tuple[list[str], set[str], list[str]]:
        """Run ids from the monitor's events, newest first, paging back until the runs are ones already
        recorded (after any downtime: at most MAX_EVENT_PAGES a cycle, then on next cycle).

        Returns the run ids, those of them read where the last cycle stopped, and where the catch-up
        goes on next cycle.
        """
        found: list[str] = []
        newer: set[str] = set()  # found on the newest pages: news, even if older pages list them too
        resumed: set[str] = set()

        def visit(data: list[Any], older: bool) -> bool:
            new_here = False
            for ev in data:
                rid = ev.get("run_id") if isinstance(ev, Mapping) else None
                if not isinstance(rid, str):
                    continue
                created = parse_time(ev.get("created"))
                if not_before is not None and created is not None and created < not_before:
                    continue
                done = view.is_done(PROVIDER, rid)
                if done is None:
                    new_here = True
                if done is not True:
                    found.append(rid)
                    if not older:
                        newer.add(rid)
                    elif rid not in newer:
                        resumed.add(rid)
            return new_here

        def listing(start: str | None) -> AsyncGenerator[Page, None]:
            params = {"limit": EVENTS_PAGE}
            path = f"{mpath}/events"
            return read_pages(
                self.api, path, params, shape=SHAPE, endpoint="list_events", what="events list", cursor=start
            )

        left = await read_back(listing, view.backlog(PROVIDER, monitor_id), visit, MAX_EVENT_PAGES)
        return found, resumed, left

    async def _poll_monitor(
        self, monitor_id: str, view: RunView, now: float, not_before: float | None
    ) -> MonitorBatch:
        if not MONITOR_ID.match(monitor_id):
            raise ApiError(PROVIDER, "bad_id", f"{monitor_id!r} is not an Olostep monitor id")
        mpath = f"/v1/monitors/{quote(monitor_id, safe='')}"
        monitor = self.monitors.get(monitor_id) or {}
        if "last_run" not in monitor:
            # The list did not carry it (not documented there): ask the monitor itself, which also
            # says when its next run is due.
            got = await self.api.get_json(mpath, endpoint="get_monitor")
            monitor = got if isinstance(got, Mapping) else {}
            self.schedule.expect(monitor_id, next_run_at(monitor, now), now)
        last_run = monitor.get("last_run") if isinstance(monitor.get("last_run"), Mapping) else None
        err = monitor.get("error_message")
        monitor_error = err if isinstance(err, str) and err else None
        candidates, resumed, left = await self._discover(monitor_id, mpath, view, not_before)
        listed = monitor or None
        if last_run and isinstance(last_run.get("id"), str):
            ran_at = parse_time(last_run.get("ran_at"))
            in_scope = not_before is None or ran_at is None or ran_at >= not_before
            if view.is_done(PROVIDER, last_run["id"]) is not True and in_scope:
                candidates.append(last_run["id"])
        candidates.extend(view.unfinished(PROVIDER, monitor_id))
        snaps: list[RunSnapshot] = []
        retired: list[str] = []
        for run_id in dict.fromkeys(candidates):
            if not RUN_ID.match(run_id):
                self.metrics.poll_errors.labels(PROVIDER, "bad_id").inc()
                continue
            try:
                detail = await self.api.get_json(f"{mpath}/runs/{quote(run_id, safe='')}", endpoint="get_run")
            except ApiError as exc:
                if exc.reason == "not_found":
                    if self.missing.gone(monitor_id, run_id) and view.is_done(PROVIDER, run_id) is False:
                        retired.append(run_id)
                    continue
                raise
            self.missing.seen(run_id)
            if not isinstance(detail, Mapping):
                self.metrics.poll_errors.labels(PROVIDER, "bad_shape").inc()
                continue
            for gap in event_gaps(detail.get("events")):
                self.metrics.poll_errors.labels(PROVIDER, gap).inc()
            snaps.append(derive(monitor_id, run_id, detail, last_run, monitor_error))
        return MonitorBatch(
            PROVIDER,
            monitor_id,
            snaps,
            retired,
            monitor=listed,
            backlog=bounded_backlog(PROVIDER, monitor_id, left),
            resumed=frozenset(resumed),
        )


SPEC = ProviderSpec(
    name=PROVIDER,
    settings=OlostepSettings,
    source=OlostepSource,
    key_env="OLOSTEP_API_KEY",
    credential="olostep_api_key",
    fake="runwatch.fakes.olostep:FakeOlostep",
    real_hosts=("api.olostep.com",),
)
