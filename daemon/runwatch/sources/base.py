"""What every provider source gives the daemon, what it may read of the state, and shared helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RunSnapshot
from runwatch.sources.http import ApiError
from runwatch.sources.settings import ProviderSettings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What the registry knows of one provider.

    ``fake`` is ``module:Class`` of its fake server (imported only by tests, the demo and
    ``runwatch fake``); ``real_hosts`` are the hosts of the real API (a short interval there warns).
    """

    name: str
    settings: type[ProviderSettings]
    source: Callable[..., Source]
    key_env: str
    credential: str
    fake: str
    real_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MonitorBatch:
    """Everything one poll saw of one monitor's runs; recorded in one transaction.

    ``retired`` are runs the source gives up on (their get-run answered 404 poll after poll): they are
    recorded as finished, with no change reported, so nobody asks for them again.
    """

    provider: str
    monitor_id: str
    snapshots: Sequence[RunSnapshot]
    retired: Sequence[str] = ()


@dataclass(slots=True)
class PollReport:
    """How one poll cycle went: what was read, and the requests that failed for good."""

    monitors: int = 0
    snapshots: int = 0
    errors: list[ApiError] = field(default_factory=list)
    skipped: int = 0
    #: Monitors not due this cycle (idle, polled at the idle pace).
    idle: int = 0


class RunView(Protocol):
    """The read-only view of the state a source needs to skip work (kept incrementally by the store)."""

    def is_done(self, provider: str, run_id: str) -> bool | None:
        """True when the run is recorded finished, False when recorded unfinished, None when unknown."""
        ...

    def unfinished(self, provider: str, monitor_id: str) -> Collection[str]:
        """The recorded unfinished runs of one monitor."""
        ...


Produce = Callable[[MemoryObjectSendStream[MonitorBatch], PollReport], Awaitable[None]]


@asynccontextmanager
async def poll_stream(
    produce: Produce,
) -> AsyncIterator[tuple[MemoryObjectReceiveStream[MonitorBatch], PollReport]]:
    """Run ``produce`` (one poll cycle) and hand its monitor batches to the caller as they are read.

    The source only reads and sends; the caller (the daemon) feeds each batch to the pipeline, so data
    flows one way. The report is complete once the stream is exhausted.
    """
    report = PollReport()
    send, receive = anyio.create_memory_object_stream[MonitorBatch](max_buffer_size=16)

    async def run() -> None:
        async with send:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await produce(send, report)

    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(run)
        yield receive, report


class MissingRuns:
    """Runs whose get-run answers 404: asked again for a few polls, then retired with a log line."""

    def __init__(self, provider: str, metrics: Metrics, after: int = 3) -> None:
        self.provider = provider
        self.metrics = metrics
        self.after = after
        self._misses: dict[str, int] = {}

    def seen(self, run_id: str) -> None:
        self._misses.pop(run_id, None)

    def gone(self, monitor_id: str, run_id: str) -> bool:
        """One more 404; True when the run is to be retired now."""
        n = self._misses.get(run_id, 0) + 1
        if n < self.after:
            self._misses[run_id] = n
            log.warning(
                "run.vanished", provider=self.provider, monitor_id=monitor_id, run_id=run_id, misses=n
            )
            return False
        self._misses.pop(run_id, None)
        self.metrics.poll_errors.labels(self.provider, "run_retired").inc()
        log.warning(
            "run.retired",
            provider=self.provider,
            monitor_id=monitor_id,
            run_id=run_id,
            hint=f"get-run answered 404 {n} polls in a row; no longer polled",
        )
        return True


class Source(Protocol):
    """One provider's poller."""

    provider: str

    def poll(
        self, view: RunView, *, now: float, not_before: float | None
    ) -> AbstractAsyncContextManager[tuple[MemoryObjectReceiveStream[MonitorBatch], PollReport]]:
        """One poll cycle of the monitors that are due at ``now``, as a stream of monitor batches.

        ``not_before`` (unix seconds): runs created before it are out of scope and never reported.
        """
        ...

    async def aclose(self) -> None: ...


def parse_time(value: Any) -> float | None:
    """ISO-8601 strings, unix seconds or unix milliseconds -> unix seconds (None if unparseable)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
