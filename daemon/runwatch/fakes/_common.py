"""Small pieces both fakes share: scenario offsets, timestamps, the request log."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from pydantic import BeforeValidator

#: Slack when comparing scenario times: a ManualClock at ~1.78e9 s has float steps of ~2.4e-7 s, so
#: ``now - t0`` after many ``advance(0.1)`` may land a hair below the sum; an entry due then is still
#: visible. Well below the 1 ms resolution scenarios are written in.
EPS = 5e-4

_OFFSET = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_offset(value: Any) -> float:
    """``2s``, ``1.5s``, ``500ms``, ``-2h``, ``5m`` or a plain number -> seconds (any sign)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time offset (use e.g. 0s, 1.5s, 500ms, -2h)")
    if isinstance(value, int | float):
        return float(value)
    m = _OFFSET.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a time offset (use e.g. 0s, 1.5s, 500ms, -2h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_non_negative(value: Any) -> float:
    seconds = parse_offset(value)
    if seconds < 0:
        raise ValueError(f"{value!r} must not be negative")
    return seconds


#: Seconds relative to the fake's start; negative means before it started.
Offset = Annotated[float, BeforeValidator(parse_offset)]
#: Seconds, zero or more (delays, Retry-After).
Seconds = Annotated[float, BeforeValidator(parse_non_negative)]


def iso(ts: float) -> str:
    """Unix seconds -> ``2026-11-23T12:00:00.000Z``, the shape Exa and Olostep send."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RequestLog:
    """What a fake was asked, cheap enough for a benchmark's tens of thousands of requests.

    ``by_route`` counts per route name (``list_monitors``, ``get_monitor``, ``list_runs``,
    ``list_events``, ``get_run``, ``not_found``); ``by_path`` per ``(method, path)`` with the path as
    the fake saw it after its prefix (so tests can ask how often one run was fetched);
    ``by_status`` per HTTP status sent. ``started`` counts per ``(method, path)`` the requests that
    arrived, answered or not yet (one a slow fault holds is there already). ``by_client`` counts per
    client address ``(host, port)`` the requests that arrived: a connection's own port, which tells a
    test with several clients (several daemons, say) which of them asked, without trusting the timing.
    """

    __slots__ = ("_changed", "by_client", "by_path", "by_route", "by_status", "started", "total")

    def __init__(self) -> None:
        self._changed: anyio.Event | None = None
        self.total = 0
        self.by_route: Counter[str] = Counter()
        self.by_path: Counter[tuple[str, str]] = Counter()
        self.by_status: Counter[int] = Counter()
        self.started: Counter[tuple[str, str]] = Counter()
        self.by_client: Counter[tuple[str, int]] = Counter()

    def arrived(self, method: str, path: str, client: tuple[str, int] | None = None) -> None:
        self.started[(method, path)] += 1
        if client is not None:
            self.by_client[client] += 1
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def record(self, route: str, method: str, path: str, status: int) -> None:
        self.total += 1
        self.by_route[route] += 1
        self.by_path[(method, path)] += 1
        self.by_status[status] += 1
        self._wake()

    async def wait_count(
        self, target: int, route: str | None = None, *, path: str | None = None, started: bool = False
    ) -> None:
        """Until :meth:`count` reaches ``target`` (a test waits for a client's requests, not a timer);
        ``started``: requests to ``path`` that arrived, answered or not."""
        await self.wait_until(
            lambda: (self.started[("GET", path or "")] if started else self.count(route, path=path)) >= target
        )

    async def wait_until(self, check: Callable[[], bool]) -> None:
        """Until ``check()`` holds, asked again each time a request arrives or is answered: for what
        :meth:`wait_count` cannot say (a request from one client in ``by_client``, say)."""
        while not check():
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def count(self, route: str | None = None, *, path: str | None = None, method: str = "GET") -> int:
        """Requests to one route, or to one exact path, or all of them."""
        if path is not None:
            return self.by_path[(method, path)]
        if route is not None:
            return self.by_route[route]
        return self.total

    def reset(self) -> None:
        self.total = 0
        self.by_route.clear()
        self.by_path.clear()
        self.by_status.clear()
        self.started.clear()
        self.by_client.clear()
