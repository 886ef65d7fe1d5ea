"""What every provider source gives the pipeline, and the time and id helpers they share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runwatch.model import RunSnapshot
from runwatch.sources.http import ApiError
from runwatch.store.interfaces import RunRecord


@dataclass(frozen=True, slots=True)
class MonitorBatch:
    """Everything one poll saw of one monitor's runs; recorded in one transaction."""

    provider: str
    monitor_id: str
    snapshots: Sequence[RunSnapshot]


@dataclass(slots=True)
class PollReport:
    monitors: int = 0
    snapshots: int = 0
    errors: list[ApiError] = field(default_factory=list)
    skipped: int = 0


class KnownRuns(Protocol):
    """Read-only view of the state a source needs to skip work (the Store satisfies it)."""

    runs: dict[tuple[str, str], RunRecord]

    def run(self, provider: str, run_id: str) -> RunRecord | None: ...


Emit = Callable[[MonitorBatch], Awaitable[None]]


class Source(Protocol):
    provider: str

    async def poll(self, known: KnownRuns, emit: Emit, *, not_before: float | None) -> PollReport:
        """Poll every watched monitor once; ``emit`` each monitor's batch as soon as it is read.

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


def unfinished_by_monitor(known: KnownRuns, provider: str) -> dict[str, list[str]]:
    """Runs recorded but not finished, per monitor: they are fetched even if a listing omits them."""
    out: dict[str, list[str]] = {}
    for (p, run_id), rec in known.runs.items():
        if p == provider and not rec.done:
            out.setdefault(rec.monitor_id, []).append(run_id)
    return out
