"""The fake Olostep's live logs: ``GET /v1/monitors/{id}/agent-logs?stream=1`` as Server-Sent Events.

What ``shared/api/olostep.md`` ("Live logs") says, served the way a tolerant client must read it:

- ``event: ready`` first, its data ``{"monitor_id", "heartbeat_interval"}`` (seconds; left out when
  :attr:`LiveLogs.announce_interval` is False, and a client assumes 15 s);
- ``event: log`` for each AgentLogEvent of the monitor's runs as it becomes visible on the fake's
  clock, in ``ts`` order, its data the event as the run endpoint returns it plus ``run_id`` and
  ``monitor_id``, and its SSE ``id:`` the event's id (none for an event scripted without one);
- ``event: heartbeat`` every ``heartbeat_interval`` real seconds (a keep-alive, so real time even when
  the scenario's clock is a ManualClock);
- ``event: error`` ends a stream (only under a ``stream_error`` fault here).

A new stream starts with the events of the runs in flight when it opens (from each one's first
event); with ``Last-Event-ID`` it goes on after that event. Faults (:data:`STREAM_FAULTS`) end a
stream after some events, stop its heartbeats or make it replay everything from the start, and
:meth:`LiveLogs.drop` ends every open stream at once (a deploy on the server's side).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from starlette.responses import StreamingResponse

from runwatch.clock import Clock
from runwatch.fakes._common import EPS
from runwatch.fakes.faults import Fault

__all__ = ["LiveLogs", "sse_frame"]

#: Seconds between heartbeats unless a test says otherwise (what a client assumes when not told).
HEARTBEAT = 15.0
#: How often (real seconds) an open stream looks at the clock for events that became visible.
TICK = 0.02


class StreamRun(Protocol):
    """What the fake knows of one run: its events and when each becomes visible."""

    @property
    def id(self) -> str: ...

    @property
    def times(self) -> list[float]: ...

    @property
    def events(self) -> list[dict[str, Any]]: ...

    def done(self, now: float) -> bool: ...


def sse_frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Event: ``id:`` (when given), ``event:``, one ``data:`` line, a blank line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(frozen=True, slots=True)
class _Entry:
    at: float
    run_id: str
    event_id: str | None
    frame: bytes


class LiveLogs:
    """Every monitor's live-log stream over the scenario, and the streams open now."""

    def __init__(self, clock: Clock, t0: float, runs: Mapping[str, Sequence[StreamRun]]) -> None:
        self.clock = clock
        self.t0 = t0
        #: Real seconds between heartbeats, announced in ``ready`` (tests shorten it).
        self.heartbeat_interval = HEARTBEAT
        #: False: ``ready`` carries no ``heartbeat_interval`` (the client assumes 15 s).
        self.announce_interval = True
        #: False: no stream sends heartbeats any more (open ones stop too).
        self.heartbeats = True
        #: Streams open now, and opened in all.
        self.open = 0
        self.opened = 0
        #: The ``Last-Event-ID`` each stream was opened with, in order (None: none sent).
        self.resumed_from: list[str | None] = []
        self._runs = {m: list(rs) for m, rs in runs.items()}
        self._entries: dict[str, list[_Entry]] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._generation = 0
        self._changed: anyio.Event | None = None
        for monitor_id, monitor_runs in self._runs.items():
            rows = sorted(
                (
                    (at, order, i, run, event)
                    for order, run in enumerate(monitor_runs)
                    for i, (at, event) in enumerate(zip(run.times, run.events, strict=True))
                ),
                key=lambda r: (r[0], r[1], r[2]),
            )
            entries = []
            for at, _, _, run, event in rows:
                eid = event.get("id")
                eid = str(eid) if eid is not None else None
                data = {**event, "run_id": run.id, "monitor_id": monitor_id}
                entries.append(_Entry(at, run.id, eid, sse_frame("log", data, eid)))
            self._entries[monitor_id] = entries
            self._index[monitor_id] = {e.event_id: i for i, e in enumerate(entries) if e.event_id}

    def drop(self) -> None:
        """End every stream open now (each ends at its next look at the clock)."""
        self._generation += 1

    async def wait_open(self, count: int, *, opened: bool = False, timeout: float = 10.0) -> None:
        """Until exactly ``count`` streams are open now (``opened``: at least ``count`` were opened in
        all); a test awaits this rather than a timer (TimeoutError after ``timeout``)."""
        with anyio.fail_after(timeout):
            while not (self.opened >= count if opened else self.open == count):
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def response(self, monitor_id: str, last_event_id: str | None, fault: Fault | None) -> StreamingResponse:
        """The stream of one monitor (known to exist), as a fault (if any) shapes it."""
        now = self.clock.now() - self.t0
        entries = self._entries.get(monitor_id, [])
        replay = fault is not None and fault.kind == "stream_replay"
        start = self._index.get(monitor_id, {}).get(last_event_id or "") if not replay else None
        skip: set[str] = set()
        if start is None:
            start = 0
            if not replay:  # a new stream: the runs in flight, each from its first event
                skip = {r.id for r in self._runs.get(monitor_id, []) if r.done(now)}
        else:
            start += 1
        self.resumed_from.append(last_event_id)
        return StreamingResponse(
            self._stream(monitor_id, entries, start, skip, fault),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def _stream(
        self, monitor_id: str, entries: list[_Entry], pos: int, skip: set[str], fault: Fault | None
    ) -> AsyncIterator[bytes]:
        kind = fault.kind if fault is not None else None
        ends_after = fault.events if fault is not None and kind in ("stream_drop", "stream_error") else None
        generation = self._generation
        interval = self.heartbeat_interval
        self.open += 1
        self.opened += 1
        self._wake()
        try:
            ready: dict[str, Any] = {"monitor_id": monitor_id}
            if self.announce_interval:
                ready["heartbeat_interval"] = interval
            yield sse_frame("ready", ready)
            sent = 0
            beat_at = anyio.current_time() + interval
            while generation == self._generation:
                now = self.clock.now() - self.t0
                while pos < len(entries) and entries[pos].at <= now + EPS:
                    if ends_after is not None and sent >= ends_after:
                        break
                    entry = entries[pos]
                    pos += 1
                    if entry.run_id not in skip:
                        sent += 1
                        yield entry.frame
                if ends_after is not None and sent >= ends_after:
                    if kind == "stream_error":
                        yield sse_frame("error", {"message": "stream interrupted (injected fault)"})
                    return
                if anyio.current_time() >= beat_at:
                    beat_at = anyio.current_time() + interval
                    if self.heartbeats and kind != "stream_silent":
                        yield sse_frame("heartbeat", {"ts": round(self.clock.now() * 1000)})
                await anyio.sleep(TICK)
        finally:
            self.open -= 1
            self._wake()
