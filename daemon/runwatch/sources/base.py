"""What every provider source gives the daemon, what it may read of the state, and shared helpers.

The helpers hold the bounds against bad answers in one place, so every provider gets them alike:
:func:`read_pages` (a listing that loops, pages far beyond their size, pages without items) and
:func:`read_back` with :func:`bounded_backlog` (catching up after downtime or on a first start,
spread over cycles, never skipping a page; where it goes on is state, recorded with the runs it
read). Each bound is counted in ``runwatch_poll_errors_total{provider,reason}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.model import RunSnapshot
from runwatch.sources.http import ApiClient, ApiError
from runwatch.sources.settings import ProviderSettings

log = get_logger(__name__)

#: A page with more than this many times the items asked for is counted (``oversize_page``).
OVERSIZE = 4
#: Items of one page a source looks at; the rest are cut (also ``oversize_page``). Far above any
#: documented page size, so a server that ignores ``limit`` and answers everything at once (the Exa
#: reference documents no paging for runs) loses nothing, while a page of junk costs bounded work.
PAGE_ITEMS_MAX = 10_000
#: Answers to a request for a page from a saved cursor that say the cursor is no good for ever.
CURSOR_REFUSED = frozenset({400, 404, 410, 422})


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
    #: The monitor's raw object as the source last read it (its listing, or its own GET), for
    #: templates and matchers; None when the source has not read it.
    monitor: Mapping[str, Any] | None = None
    #: Unix seconds: when the newest run this poll saw was created (or started), by the provider's
    #: clock; what tells the daemon a scheduled run came.
    last_started: float | None = None
    #: Where reading the monitor's runs goes on next cycle (:func:`read_back`; empty: nothing left to
    #: read), recorded with this batch; None when this batch says nothing about it.
    backlog: tuple[str, ...] | None = None
    #: Runs read from pages a catch-up went on from (older than runs recorded before): history, not
    #: news, while the monitor's first-start baseline is still being read.
    resumed: frozenset[str] = frozenset()
    #: When the cycle that read this began (its ``now``, the daemon's clock): the pushes received by
    #: then are answered by this read (:class:`~runwatch.store.interfaces.Hints`).
    polled_at: float | None = None


@dataclass(frozen=True, slots=True)
class MonitorListing:
    """One successful read of a provider's monitor list: every monitor's raw object and next due run.

    ``gone`` are monitors the source confirmed gone (absent from a complete listing, or, for a
    provider whose docs say so, a GET that answered 404 or ``status: deleted``), with their last
    raw object when the provider gave one. A monitor neither listed nor in ``gone`` is unknown this
    cycle: the daemon leaves it as it was.
    """

    provider: str
    monitors: Mapping[str, Mapping[str, Any]]
    #: Unix seconds of each listed monitor's next scheduled run (None: not known).
    due: Mapping[str, float | None]
    gone: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class PollReport:
    """How one poll cycle went: what was read, and the requests that failed for good."""

    monitors: int = 0
    snapshots: int = 0
    errors: list[ApiError] = field(default_factory=list)
    skipped: int = 0
    #: Monitors not due this cycle (idle, polled at the idle pace).
    idle: int = 0
    #: The monitor list, when this cycle read it: the daemon records it once the batches are in.
    listing: MonitorListing | None = None
    #: Idle monitors due but left for a later cycle: the cycle ran out of time (the request budget).
    deferred: int = 0


class RunView(Protocol):
    """The read-only view of the state a source needs to skip work (kept incrementally by the store)."""

    def is_done(self, provider: str, run_id: str) -> bool | None:
        """True when the run is recorded finished, False when recorded unfinished, None when unknown."""
        ...

    def unfinished(self, provider: str, monitor_id: str) -> Collection[str]:
        """The recorded unfinished runs of one monitor."""
        ...

    def listed_monitors(self, provider: str) -> Collection[str]:
        """The monitors the last recorded listing showed (not deleted): whose absence is news."""
        ...

    def backlog(self, provider: str, monitor_id: str) -> Sequence[str]:
        """Where the monitor's last recorded poll left off (:attr:`MonitorBatch.backlog`)."""
        ...


Produce = Callable[[MemoryObjectSendStream[MonitorBatch], PollReport], Awaitable[None]]


async def hand_over(send: MemoryObjectSendStream[MonitorBatch], batch: MonitorBatch) -> None:
    """Send a batch to the daemon: at once while the stream has room (no trip round the event loop
    per monitor: the request before it has just yielded), else wait for room."""
    try:
        send.send_nowait(batch)
    except anyio.WouldBlock:
        await send.send(batch)


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


#: Share of a cycle's request budget (``max_requests_per_second`` x ``poll_interval``) that idle polls
#: may start within: past it the rest wait for a later cycle, so that a budget too small for every idle
#: monitor never makes a cycle outlast its interval and delay the active ones.
IDLE_SHARE = 0.8


async def poll_monitors(
    hot: Sequence[str],
    idle: Sequence[str],
    one: Callable[[str], Awaitable[None]],
    *,
    api: ApiClient,
    seconds: float,
    workers: int,
    report: PollReport,
) -> None:
    """Poll ``hot`` then ``idle`` monitors, ``workers`` at a time, in that order.

    A few workers pulling from one ordered queue rather than a task per monitor: at most ``workers``
    requests ever wait for the request budget ahead of a hot monitor's next one, so ten thousand idle
    monitors due together cannot starve the active ones. Once the cycle has sent ``IDLE_SHARE`` of
    what the budget allows in ``seconds`` (the poll interval), a worker starts no more idle polls but
    its first: the rest stay due (the longest waiting first next cycle), counted in ``report.deferred``.
    """
    queue = iter([*((m, True) for m in hot), *((m, False) for m in idle)])
    limit = api.sent + IDLE_SHARE * api.rate * seconds

    async def worker() -> None:
        idle_started = False
        for mid, is_hot in queue:
            if not is_hot:
                if idle_started and api.sent >= limit:
                    report.deferred += 1
                    continue
                idle_started = True
            await one(mid)

    n = min(workers, len(hot) + len(idle))
    if n == 1:
        await worker()
    elif n:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(worker)
    if report.deferred:
        log.warning(
            "poll.behind",
            provider=api.provider,
            deferred=report.deferred,
            hint="idle monitors left for a later cycle: max_requests_per_second is too low for them all",
        )


def pushed_only(read_now: Sequence[str], known: Collection[str]) -> list[str]:
    """A cycle of pushed monitors alone (``only``): those of ``read_now`` the source watches, each once."""
    watched = set(known)
    return [m for m in dict.fromkeys(read_now) if m in watched]


@dataclass(frozen=True, slots=True)
class PageShape:
    """How one API spells a list page: its items, whether more follow, the next page's cursor."""

    items: str = "data"
    more: str = "hasMore"
    cursor: str = "nextCursor"
    #: Keys naming an item (the first string value wins), to tell a page that brings nothing new.
    ids: tuple[str, ...] = ("id",)

    def item_id(self, item: Any) -> str | None:
        if isinstance(item, dict):
            for key in self.ids:
                value = item.get(key)
                if isinstance(value, str) and value:
                    return value
        return None


#: One page: its items and the cursor of the next page (None: the listing ends there).
Page = tuple[list[Any], str | None]


async def read_pages(
    api: ApiClient,
    path: str,
    params: dict[str, Any],
    *,
    shape: PageShape,
    endpoint: str,
    what: str,
    cursor: str | None = None,
    max_pages: int | None = None,
) -> AsyncGenerator[Page, None]:
    """Each page of a listing from ``cursor`` on, following the next cursor while more follow.

    Bounded against a server that misbehaves, each bound counted under ``poll_errors``:
    a page without its items array raises ApiError(``bad_shape``); a page far beyond the size asked
    for is counted (``oversize_page``) and cut at PAGE_ITEMS_MAX; a cursor seen before, or a page
    that brings no item not already seen in this listing, ends it (``cursor_loop``: a server that
    loops would otherwise be followed forever, and a monitor it lists on every page polled on every
    copy); more than ``max_pages`` pages end it (``too_many_pages``).
    """
    metrics, provider = api.metrics, api.provider
    limit = int(params.get("limit", 0)) or None
    cursors: set[str] = set()
    ids: set[str] = set()
    pages = 0
    while True:
        query = dict(params, cursor=cursor) if cursor else params
        page = await api.get_json(path, query, endpoint=endpoint)
        data = page.get(shape.items) if isinstance(page, dict) else None
        if not isinstance(data, list):
            metrics.poll_errors.labels(provider, "bad_shape").inc()
            raise ApiError(provider, "bad_shape", f"{what} has no {shape.items!r} array", path=path)
        assert isinstance(page, dict)
        if (limit is not None and len(data) > limit * OVERSIZE) or len(data) > PAGE_ITEMS_MAX:
            metrics.poll_errors.labels(provider, "oversize_page").inc()
            kept = min(len(data), PAGE_ITEMS_MAX)
            log.warning("page.oversize", provider=provider, path=path, items=len(data), kept=kept)
            del data[PAGE_ITEMS_MAX:]
        fresh = {i for i in map(shape.item_id, data) if i is not None and i not in ids}
        if pages and not fresh:
            metrics.poll_errors.labels(provider, "cursor_loop").inc()
            log.warning("page.cursor_loop", provider=provider, path=path, hint="a page with nothing new")
            return
        ids |= fresh
        pages += 1
        nxt = page.get(shape.cursor) if page.get(shape.more) else None
        nxt = nxt if isinstance(nxt, str) and nxt else None
        yield data, nxt
        if nxt is None:
            return
        if nxt in cursors or nxt == cursor:
            metrics.poll_errors.labels(provider, "cursor_loop").inc()
            log.warning("page.cursor_loop", provider=provider, path=path, hint="a cursor seen before")
            return
        if max_pages is not None and pages >= max_pages:
            metrics.poll_errors.labels(provider, "too_many_pages").inc()
            log.warning("page.too_many", provider=provider, path=path, pages=pages)
            return
        cursors.add(nxt)
        cursor = nxt


async def read_back(
    listing: Callable[[str | None], AsyncGenerator[Page, None]],
    pending: Sequence[str],
    visit: Callable[[list[Any], bool], bool],
    max_pages: int,
) -> list[str]:
    """Read a newest-first listing back until a page holds nothing new, at most ``max_pages`` pages.

    Starts at the newest page (what happened since the last cycle), then goes on from each cursor in
    ``pending`` (where an earlier cycle ran out of pages). ``visit`` sees each page's items and
    whether the page is one of those older ones, and says whether any item was new. Returns the
    cursors to go on from next cycle (newest first): a catch-up after a long downtime, or a first
    start's history, is spread over cycles, never cut. A saved cursor the server refuses for good
    (400, 404, 410, 422; counted under that status) is dropped with a ``page.cursor_refused`` log
    line: asking again would fail the monitor's poll every cycle, for ever.
    """
    starts: list[str | None] = [None, *pending]
    left: list[str] = []
    pages = 0
    for i, start in enumerate(starts):
        if pages >= max_pages:
            left.extend(s for s in starts[i:] if s is not None)
            break
        pager = listing(start)
        try:
            async for data, nxt in pager:
                pages += 1
                if not visit(data, start is not None):
                    break  # caught up: this page holds only runs already recorded (or out of scope)
                if pages >= max_pages:
                    if nxt is not None:
                        left.append(nxt)
                    break
        except ApiError as exc:
            if start is None or exc.status not in CURSOR_REFUSED:
                raise
            log.warning("page.cursor_refused", provider=exc.provider, path=exc.path, status=exc.status)
        finally:
            await pager.aclose()
    return left


#: Cursors kept per monitor (the newest): only a server that invents new runs faster than a cycle's
#: page budget can reach it.
BACKLOG_MAX = 16


def bounded_backlog(provider: str, monitor_id: str, left: Sequence[str]) -> tuple[str, ...]:
    """What a poll hands over as :attr:`MonitorBatch.backlog`: :func:`read_back`'s cursors, at most
    ``BACKLOG_MAX`` (a log line when more are cut). The daemon records them with the poll's runs, so a
    poll that fails half-way reads its pages again next cycle, and a restart goes on from them."""
    if len(left) > BACKLOG_MAX:
        dropped = len(left) - BACKLOG_MAX
        log.warning("backlog.cut", provider=provider, monitor_id=monitor_id, dropped=dropped)
    return tuple(left[:BACKLOG_MAX])


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
        self.metrics.poll_errors.labels(self.provider, "retired").inc()
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
    #: Its settings (a reload that changes only push keys hands the source the new ones).
    settings: ProviderSettings

    def poll(
        self,
        view: RunView,
        *,
        now: float,
        not_before: float | None,
        watch_due: float = 0.0,
        read_now: Sequence[str] = (),
        only: bool = False,
    ) -> AbstractAsyncContextManager[tuple[MemoryObjectReceiveStream[MonitorBatch], PollReport]]:
        """One poll cycle of the monitors that are due at ``now``, as a stream of monitor batches.

        ``not_before`` (unix seconds): runs created before it are out of scope and never reported.
        ``watch_due`` (seconds): the rules' largest ``grace`` for missed runs; a monitor whose
        scheduled run is late is polled at ``poll_interval`` that long after its due time.
        ``read_now``: monitors a push asked to read (oldest push first): polled this cycle before any
        idle one (:meth:`Schedule.plan`'s ``urgent``). ``only``: a cycle of just those (to answer a
        push at once, beside a regular cycle or between two): no other monitor, and the monitor list
        only when a push names a monitor it has not shown yet.
        """
        ...

    async def aclose(self) -> None: ...


#: parse_time's answers for strings: the same timestamps come back poll after poll (every unfinished run
#: carries its createdAt and updatedAt in every answer), and fromisoformat is most of a run's parse.
_TIMES: dict[str, float | None] = {}
_TIMES_MAX = 20_000


def parse_time(value: Any) -> float | None:
    """ISO-8601 strings, unix seconds or unix milliseconds -> unix seconds (None if unparseable)."""
    if isinstance(value, str):
        try:
            return _TIMES[value]
        except KeyError:
            pass
        if not value:
            return None
        try:
            t: float | None = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            t = None
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[value] = t
        return t
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    return None
