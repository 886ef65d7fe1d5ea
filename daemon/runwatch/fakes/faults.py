"""Fault injection shared by both fakes: the failures a poller must survive, on demand.

A fault matches requests by an ``fnmatch`` glob on the path after the fake's prefix (``*`` also
crosses ``/``), optionally only inside a scenario-time window, and fires ``count`` times (or forever).
Scenario files list faults per provider; tests add them at runtime with ``fake.faults.add(...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from runwatch.fakes._common import EPS, Offset, Seconds

__all__ = ["PAGE_FAULTS", "STREAM_FAULTS", "Fault", "FaultKind", "Faults"]

#: status: answer ``status`` with the provider's JSON error body; rate_limit: 429 with
#: ``Retry-After``; slow: sleep ``delay`` for real, then answer normally; garbage: 200 with a broken
#: JSON body; auth: 401 as if the key were wrong.
#: Bad pages (list endpoints with a ``data`` array; other answers pass through): cursor_loop: the
#: page asked for, always with more to come, and as next cursor the one just asked for (the first
#: page: its real next one); endless: the first page again and again, each time with more to come
#: and a new cursor; ignore_limit: every item in one page, as a server that ignores ``limit`` does;
#: oversize: the page padded to ``items`` entries (copies of its last one).
#: Bad bodies: empty: 200 with ``{}``; huge: 200 with a valid JSON body of ``size`` bytes, streamed
#: without a length; echo_key: answer ``status`` with a ``size``-character body that repeats the
#: request's API key at character ``echo_at`` (an API that echoes what it was sent).
#: Live-log streams (Olostep's ``agent-logs?stream=1``; other answers pass through): stream_drop: the
#: server ends the stream after ``events`` log events; stream_error: it sends an SSE ``error`` event
#: there instead, and ends; stream_silent: no heartbeat at all on that stream; stream_replay: the
#: stream ignores ``Last-Event-ID`` and replays every visible event from the start.
FaultKind = Literal[
    "status",
    "rate_limit",
    "slow",
    "garbage",
    "auth",
    "cursor_loop",
    "endless",
    "ignore_limit",
    "oversize",
    "empty",
    "huge",
    "echo_key",
    "stream_drop",
    "stream_error",
    "stream_silent",
    "stream_replay",
]
#: The kinds that rewrite a list endpoint's page (the rest replace the answer).
PAGE_FAULTS: frozenset[str] = frozenset({"cursor_loop", "endless", "ignore_limit", "oversize"})
#: The kinds a live-log stream acts on itself while it streams (see :mod:`runwatch.fakes.live`).
STREAM_FAULTS: frozenset[str] = frozenset({"stream_drop", "stream_error", "stream_silent", "stream_replay"})


class Fault(BaseModel):
    """One injected failure; ``hits`` says how many requests it has answered so far."""

    model_config = ConfigDict(extra="forbid")

    path: str = "*"
    kind: FaultKind
    status: int = Field(default=500, ge=400, le=599)
    #: Seconds for the ``Retry-After`` header of ``rate_limit`` (None: send no header, as Exa may).
    #: Fractions are sent as such (``0.5``): not HTTP-standard, but lets tests retry fast.
    retry_after: Seconds | None = 1.0
    #: Seconds a ``slow`` fault waits (real time) before answering.
    delay: Seconds = 1.0
    #: Entries an ``oversize`` page is padded to.
    items: int = Field(default=10_000, ge=1)
    #: Bytes of a ``huge`` body; characters of an ``echo_key`` body.
    size: int = Field(default=1 << 20, ge=1)
    #: Where an ``echo_key`` body repeats the key (characters from its start).
    echo_at: int = Field(default=0, ge=0)
    #: Log events a ``stream_drop`` or ``stream_error`` stream sends before it ends.
    events: int = Field(default=0, ge=0)
    #: How many matching requests it answers; None means every one.
    count: int | None = Field(default=None, ge=1)
    #: How many matching requests it lets through first (e.g. the first page of a listing).
    skip: int = Field(default=0, ge=0)
    #: Scenario-time window (offsets from t0) in which it is active: ``after <= t < until``.
    after: Offset | None = None
    until: Offset | None = None

    _hits: int = PrivateAttr(default=0)
    _skipped: int = PrivateAttr(default=0)

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self._hits >= self.count

    def matches(self, path: str, scenario_time: float) -> bool:
        if self.exhausted:
            return False
        if self.after is not None and scenario_time + EPS < self.after:
            return False
        if self.until is not None and scenario_time + EPS >= self.until:
            return False
        return fnmatchcase(path, self.path)


class Faults:
    """The active faults of one fake, checked in the order they were added."""

    def __init__(self, initial: Iterable[Fault] = ()) -> None:
        self._faults: list[Fault] = []
        for fault in initial:
            # A scenario's faults are copied so that two fakes from one scenario count hits apart.
            self.add(fault.model_copy())

    def add(self, fault: Fault) -> Fault:
        """Activate ``fault`` (its hit count starts at zero) and return it, to read ``hits`` later."""
        fault._hits = fault._skipped = 0
        self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        self._faults.clear()

    def __iter__(self) -> Iterator[Fault]:
        return iter(list(self._faults))

    def __len__(self) -> int:
        return len(self._faults)

    def hit(self, path: str, scenario_time: float) -> Fault | None:
        """The first fault that answers this request (counting the hit), or None."""
        for fault in self._faults:
            if fault.matches(path, scenario_time):
                if fault._skipped < fault.skip:
                    fault._skipped += 1
                    continue
                fault._hits += 1
                return fault
        return None
