"""The Exa source against the fake Exa API: what each cycle costs, and catching up after downtime."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from runwatch.fakes import Fault, Scenario
from runwatch.model import RunSnapshot
from runwatch.sources.exa import MAX_PAGES, PAGE_LIMIT
from tests.sources.harness import Harness, exa_run, harness

pytestmark = pytest.mark.anyio


def fixed_story() -> Scenario:
    """Four monitors: a run in progress (a), an idle one (b), one with 55 finished runs and an older
    run still going that no first page shows (c), one with a run scheduled at 25 s (d)."""
    c_runs = [exa_run("mrun_long", (-6000, "created"), (-5900, "running"), (45, "completed"))]
    c_runs += [exa_run(f"mrun_c{i:02d}", (-5000 + i, "created"), (-4000 + i, "completed")) for i in range(55)]
    return Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {
                        "id": "monitor_a",
                        "runs": [exa_run("mrun_a1", (0, "created"), (15, "running"), (35, "completed"))],
                    },
                    {
                        "id": "monitor_b",
                        "runs": [exa_run("mrun_b0", (-7200, "created"), (-3600, "completed"))],
                    },
                    {"id": "monitor_c", "runs": c_runs},
                    {"id": "monitor_d", "runs": [exa_run("mrun_d1", (25, "created"), (28, "completed"))]},
                ]
            }
        }
    )


#: Requests per cycle (scenario second -> list_monitors, get_monitor, list_runs, get_run) at
#: poll_interval 10 s, idle_poll_interval 60 s. A change that adds a request changes this table.
#: Idle polls are spread over the idle interval: the first listing gives a, b, c, d the phases 12.5,
#: 27.5, 42.5 and 57.5 s, and an idle monitor is polled in the cycle nearest its phase (each 60 s).
EXPECTED_REQUESTS = {
    0: (1, 0, 5, 0),  # the list; each monitor's first page (c: two, 56 new runs)
    10: (0, 0, 2, 1),  # a and c have unfinished runs; c's is older than its first page: one GET
    20: (0, 0, 2, 1),
    30: (0, 0, 4, 1),  # d's scheduled run was due at 25 s; b's phase (27.5 s)
    40: (0, 0, 2, 1),  # a's run finished
    50: (0, 0, 1, 1),  # c's long run finished
    60: (1, 0, 1, 0),  # the list, and d at its phase (57.5 s)
    70: (0, 0, 1, 0),  # a at its phase (72.5 s)
    80: (0, 0, 0, 0),
    90: (0, 0, 1, 0),  # b (87.5 s)
    100: (0, 0, 1, 0),  # c (102.5 s)
    110: (0, 0, 0, 0),
    120: (1, 0, 1, 0),  # the list and d
    130: (0, 0, 1, 0),  # a
}


async def test_request_counts_per_cycle(tmp_path: Path) -> None:
    async with harness("exa", fixed_story(), tmp_path) as h:
        cycles = await h.cycles_until(130, 10)
    assert {int(c.at): c.table("exa") for c in cycles} == EXPECTED_REQUESTS
    status = [(ch.run_id, ch.to_status) for c in cycles[1:] for ch in c.changes]
    assert status == [
        ("mrun_a1", "running"),
        ("mrun_d1", "completed"),
        ("mrun_a1", "completed"),
        ("mrun_long", "completed"),
    ]


BUSY = "monitor_busy"
RUNS = 1200


def downtime_story() -> Scenario:
    """Three runs before the daemon stopped; then 1,200 (the oldest failed) while it was down."""
    before = [exa_run(f"mrun_before_{i}", (i, "created"), (i + 5, "completed")) for i in range(3)]
    during = [
        exa_run(
            f"mrun_{i:04d}", (100 + 10 * i, "created"), (105 + 10 * i, "failed" if i == 0 else "completed")
        )
        for i in range(RUNS)
    ]
    quiet = [exa_run("mrun_quiet", (0, "created"), (30_000, "completed"))]
    return Scenario.model_validate(
        {"exa": {"monitors": [{"id": BUSY, "runs": before + during}, {"id": "monitor_quiet", "runs": quiet}]}}
    )


async def restart_after_downtime(h: Harness) -> None:
    """A first cycle at 50 s records the three runs before; the daemon is down until 20,000 s."""
    h.clock.advance(50)
    first = await h.cycle()
    assert sorted(first.run_ids()) == ["mrun_before_0", "mrun_before_1", "mrun_before_2", "mrun_quiet"]
    h.clock.advance(20_000 - 50)


def once_each(h: Harness) -> Counter[str]:
    """How often each run of the downtime had a status change reported."""
    return Counter(
        ch.run_id
        for c in h.cycles[1:]
        for ch in c.changes
        if ch.run_id[5:].isdigit() and ch.kind.value == "run.status"
    )


async def test_catch_up_after_downtime_reports_every_run_once(tmp_path: Path) -> None:
    async with harness("exa", downtime_story(), tmp_path) as h:
        await restart_after_downtime(h)
        first = await h.cycle()
        # MAX_PAGES pages a cycle; the rest next cycle, from where this one stopped.
        assert first.paths[f"/v0/monitors/{BUSY}/runs"] == MAX_PAGES
        assert len(once_each(h)) == MAX_PAGES * PAGE_LIMIT
        h.clock.advance(10)
        second = await h.cycle()
        # The newest page (nothing new since), then the 200 runs left and the page that reaches the
        # runs recorded before the downtime.
        assert second.paths[f"/v0/monitors/{BUSY}/runs"] == 1 + 4 + 1
        assert "monitor_quiet" in second.asked()  # unfinished: polled every cycle throughout
        h.clock.advance(10)
        third = await h.cycle()
        assert third.asked() == {"monitor_quiet"}  # caught up: the busy monitor is idle again
        assert h.errors("cursor_loop") == h.errors("oversize_page") == 0
    reported = once_each(h)
    assert set(reported.values()) == {1} and len(reported) == RUNS
    oldest = [ch for c in h.cycles for ch in c.changes if ch.run_id == "mrun_0000"]
    assert [(ch.from_status, ch.to_status) for ch in oldest] == [(None, "failed")]


async def test_a_catch_up_cut_by_an_error_goes_on_where_it_was(tmp_path: Path) -> None:
    """The second catch-up cycle fails (503 after the retry): its pages are read again next cycle,
    none is skipped, and the other monitor is polled meanwhile."""
    async with harness("exa", downtime_story(), tmp_path) as h:
        await restart_after_downtime(h)
        await h.cycle()
        h.clock.advance(10)
        fault = h.running.fake.faults.add(
            Fault(path=f"/v0/monitors/{BUSY}/runs", kind="status", status=503, count=2)
        )
        failed = await h.cycle()
        assert fault.hits == 2 and [e.reason for e in failed.report.errors] == ["http_503"]
        assert [b.monitor_id for b in failed.batches] == ["monitor_quiet"]
        h.clock.advance(10)
        await h.cycle()
        h.clock.advance(10)
        await h.cycle()
    reported = once_each(h)
    assert set(reported.values()) == {1} and len(reported) == RUNS


async def test_a_restart_in_the_middle_of_a_catch_up_goes_on_where_it_was(tmp_path: Path) -> None:
    """The daemon restarts after the first catch-up cycle: the next start goes on from the cursor
    recorded with that cycle's runs (the source's memory is gone), and every run is reported once."""
    async with harness("exa", downtime_story(), tmp_path) as h:
        await restart_after_downtime(h)
        await h.cycle()
        await h.restart()
        h.clock.advance(10)
        second = await h.cycle()
        assert second.paths[f"/v0/monitors/{BUSY}/runs"] == 1 + 4 + 1
    reported = once_each(h)
    assert set(reported.values()) == {1} and len(reported) == RUNS


async def test_a_failed_get_run_does_not_lose_the_pages_read_before_it(tmp_path: Path) -> None:
    """A run recorded unfinished that no page shows any more is fetched after the pages; when that
    fetch fails for good, the monitor's batch is dropped and its pages are read again next cycle."""
    async with harness("exa", downtime_story(), tmp_path) as h:
        await restart_after_downtime(h)
        ghost = RunSnapshot("exa", BUSY, "mrun_ghost", "running", raw={"id": "mrun_ghost"})
        h.state.record("exa", [ghost], [], h.clock.now(), monitor_id=BUSY)
        await h.cycle()  # the first 20 pages; the ghost answers 404 (once: not retired yet)
        h.clock.advance(10)
        h.running.fake.faults.add(
            Fault(path=f"/v0/monitors/{BUSY}/runs/mrun_ghost", kind="status", status=500, count=2)
        )
        failed = await h.cycle()
        assert [e.reason for e in failed.report.errors] == ["http_500"]
        for _ in range(2):
            h.clock.advance(10)
            await h.cycle()
    reported = once_each(h)
    assert set(reported.values()) == {1} and len(reported) == RUNS


async def test_a_saved_cursor_the_server_refuses_is_dropped_not_asked_for_ever(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    """The API answers 400 to the page a catch-up saved (its cursor expired): that cycle still records
    what it read, says so in the log, and the next cycles do not ask again. The runs behind the
    refused cursor are not reported: a poll that failed on it every cycle would report nothing."""
    async with harness("exa", downtime_story(), tmp_path) as h:
        await restart_after_downtime(h)
        await h.cycle()
        h.clock.advance(10)
        path = f"/v0/monitors/{BUSY}/runs"
        h.running.fake.faults.add(Fault(path=path, kind="status", status=400, skip=1, count=1))
        refused = await h.cycle()
        assert refused.paths[path] == 2 and not refused.report.errors
        assert BUSY in {b.monitor_id for b in refused.batches}
        h.clock.advance(10)
        assert BUSY not in (await h.cycle()).asked()
    assert "page.cursor_refused" in log_lines.getvalue()
    assert len(once_each(h)) == MAX_PAGES * PAGE_LIMIT
