"""Bounded against bad answers, for both providers: each bad answer costs a bounded number of requests
and items, is counted in ``runwatch_poll_errors_total{provider,reason}``, and never keeps the other
monitor from being polled. And no piece of the API key in an error, wherever an answer echoes it.

Two monitors each time: ``monitor_bad`` gets the fault, ``monitor_good`` has a run that finishes at
20 s, which must be reported all the same.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import Fault, Scenario, fake_server
from runwatch.model import RunSnapshot
from runwatch.service.app import Daemon
from runwatch.sources.base import OVERSIZE, PAGE_ITEMS_MAX
from runwatch.sources.exa import PAGE_LIMIT
from runwatch.sources.olostep import EVENTS_PAGE
from tests.sources.harness import KEYS, Harness, exa_run, harness, olostep_run

pytestmark = pytest.mark.anyio
PROVIDERS = ["exa", "olostep"]
BAD, GOOD = "monitor_bad", "monitor_good"
#: Each provider's path for one monitor's run listing, and its page size.
LISTING = {"exa": f"/v0/monitors/{BAD}/runs", "olostep": f"/v1/monitors/{BAD}/events"}
PAGE = {"exa": PAGE_LIMIT, "olostep": EVENTS_PAGE}
RUN = {"exa": "mrun", "olostep": "run"}


def story(bad_runs: int = 2, *, running: bool = True) -> Scenario:
    """``monitor_bad`` with ``bad_runs`` finished runs (and one still running), ``monitor_good`` with
    a run that finishes at 20 s."""
    exa_bad = [
        exa_run(f"mrun_b{i:04d}", (-9000 + i, "created"), (-8000 + i, "completed")) for i in range(bad_runs)
    ]
    ol_bad = [olostep_run(f"run_b{i:04d}", -9000 + i, -8000 + i) for i in range(bad_runs)]
    if running:
        exa_bad.append(exa_run("mrun_live", (-100, "created"), (-50, "running")))
        ol_bad.append(olostep_run("run_live", -100))
    return Scenario.model_validate(
        {
            "exa": {
                "monitors": [
                    {"id": BAD, "runs": exa_bad},
                    {"id": GOOD, "runs": [exa_run("mrun_good", (0, "created"), (20, "completed"))]},
                ]
            },
            "olostep": {
                "monitors": [
                    {"id": BAD, "runs": ol_bad},
                    {"id": GOOD, "runs": [olostep_run("run_good", 0, 20)]},
                ]
            },
        }
    )


def good_finished(h: Harness) -> bool:
    run_id = f"{RUN[h.provider]}_good"
    return any(ch.run_id == run_id and ch.to_status == "completed" for c in h.cycles for ch in c.changes)


async def three_cycles(h: Harness, fault: Fault) -> list[int]:
    """Cycles at 0, 10 and 20 s with ``fault`` active; requests to the bad listing in each."""
    h.running.fake.faults.add(fault)
    counts = []
    for _ in range(3):
        cycle = await h.cycle()
        counts.append(cycle.paths[LISTING[h.provider]])
        h.clock.advance(10)
    assert good_finished(h)
    return counts


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_cursor_that_repeats_ends_the_listing(provider: str, tmp_path: Path) -> None:
    """Two pages of runs; the second names itself as the next one, for ever."""
    async with harness(provider, story(bad_runs=PAGE[provider] + 5), tmp_path) as h:
        counts = await three_cycles(h, Fault(path=LISTING[provider], kind="cursor_loop"))
        # First cycle: both pages, then the repeated cursor ends it; after that the first page holds
        # nothing new, so the cycle stops there (the loop is never reached again).
        assert counts == [2, 1, 1]
        assert h.errors("cursor_loop") == 1
        assert len(h.cycles[0].run_ids()) == PAGE[provider] + 5 + 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_pages_that_never_end_are_cut_at_the_first_that_brings_nothing_new(
    provider: str, tmp_path: Path
) -> None:
    """Every page is the first one again, with a new cursor each time."""
    async with harness(provider, story(), tmp_path) as h:
        counts = await three_cycles(h, Fault(path=LISTING[provider], kind="endless"))
        assert counts == [2, 1, 1]
        assert h.errors("cursor_loop") == 1


async def test_a_monitor_list_that_never_ends_polls_each_monitor_once(tmp_path: Path) -> None:
    async with harness("exa", story(), tmp_path) as h:
        h.running.fake.faults.add(Fault(path="/v0/monitors", kind="endless"))
        cycle = await h.cycle()
    assert cycle.routes["list_monitors"] == 2
    assert cycle.paths == {"/v0/monitors": 2, LISTING["exa"]: 1, f"/v0/monitors/{GOOD}/runs": 1}
    assert h.errors("cursor_loop") == 1


async def test_a_monitor_listed_a_thousand_times_is_polled_once(tmp_path: Path) -> None:
    async with harness("exa", story(), tmp_path) as h:
        h.running.fake.faults.add(Fault(path="/v0/monitors", kind="oversize", items=1000))
        cycle = await h.cycle()
    assert cycle.paths == {"/v0/monitors": 1, LISTING["exa"]: 1, f"/v0/monitors/{GOOD}/runs": 1}
    assert h.errors("oversize_page") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_server_that_ignores_limit_loses_no_run(provider: str, tmp_path: Path) -> None:
    """Every run in one page, several times the size asked for (Exa documents no paging for runs):
    counted, and every run is read, none cut off."""
    runs = PAGE[provider] * OVERSIZE + 20
    async with harness(provider, story(bad_runs=runs), tmp_path) as h:
        counts = await three_cycles(h, Fault(path=LISTING[provider], kind="ignore_limit"))
        assert counts == [1, 1, 1]
        assert h.errors("oversize_page") == 3
        assert len(h.cycles[0].run_ids()) == runs + 2


async def test_a_page_far_beyond_its_size_costs_bounded_work(tmp_path: Path, log_lines: io.StringIO) -> None:
    async with harness("exa", story(), tmp_path) as h:
        items = PAGE_ITEMS_MAX + 2_000
        counts = await three_cycles(h, Fault(path=LISTING["exa"], kind="oversize", items=items))
    assert counts == [1, 1, 1]
    assert h.errors("oversize_page") == 3
    assert f"items={items} kept={PAGE_ITEMS_MAX}" in log_lines.getvalue()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", ["huge", "ignore_limit"])
async def test_a_body_over_the_size_limit_is_refused_unread(provider: str, kind: str, tmp_path: Path) -> None:
    """Over a 16 KiB limit: streamed without a length (``huge``), or declared (a real page of 150 runs)."""
    limit = 16 * 1024
    async with harness(provider, story(bad_runs=150), tmp_path, client={"max_body": limit}) as h:
        fault = Fault(path=LISTING[provider], kind=kind, size=4 * limit)
        counts = await three_cycles(h, fault)
        assert counts == [1, 1, 1]
        assert h.errors("too_large") == 3
        assert all(BAD not in {b.monitor_id for b in c.batches} for c in h.cycles)
        assert [e.reason for e in h.cycles[0].report.errors] == ["too_large"]
        h.running.fake.faults.remove(fault)
        assert BAD in {b.monitor_id for b in (await h.cycle()).batches}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_answer_without_its_items_is_counted(provider: str, tmp_path: Path) -> None:
    async with harness(provider, story(), tmp_path) as h:
        counts = await three_cycles(h, Fault(path=LISTING[provider], kind="empty"))
    assert counts == [1, 1, 1]
    assert h.errors("bad_shape") == 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_run_that_answers_404_three_polls_in_a_row_is_retired(
    provider: str, tmp_path: Path, log_lines: io.StringIO
) -> None:
    """A run recorded unfinished that the API no longer knows: asked three polls, then never again."""
    ghost = f"{RUN[provider]}_ghost"
    path = f"{LISTING[provider].rsplit('/', 1)[0]}/runs/{ghost}"
    async with harness(provider, story(running=False), tmp_path) as h:
        snap = RunSnapshot(provider, BAD, ghost, "running", raw={})
        h.state.record(provider, [snap], [], h.clock.now(), monitor_id=BAD)
        cycles = await h.cycles_until(200, 10)
        assert [c.paths[path] for c in cycles[:4]] == [1, 1, 1, 0]
        assert sum(c.paths[path] for c in cycles) == 3
        assert h.errors("retired") == 1
        assert h.state.runs.is_done(provider, ghost) is True
        # Retired, the bad monitor is idle: polled at the idle pace only (0-20 s hot, then 80, 140, 200).
        assert [int(c.at) for c in cycles if BAD in c.asked()] == [0, 10, 20, 80, 140, 200]
        assert not any(ch.run_id == ghost for c in cycles for ch in c.changes)
    assert "run.retired" in log_lines.getvalue()


def pieces(key: str, n: int = 8) -> list[str]:
    return [key[i : i + n] for i in range(len(key) - n + 1)]


def leaks(text: str, key: str) -> list[str]:
    return [p for p in pieces(key) if p in text]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_piece_of_the_key_in_an_api_error_wherever_the_body_echoes_it(
    provider: str, tmp_path: Path
) -> None:
    """A 400 whose 1,000-character body repeats the key at character 0, 1, ... 400: the ApiError the
    cycle reports (its text and its body) holds no 8 characters of the key."""
    key = KEYS[provider]
    async with harness(provider, story(), tmp_path) as h:
        for at in range(401):
            h.running.fake.faults.add(Fault(kind="echo_key", status=400, echo_at=at, size=1000, count=1))
            [err] = (await h.cycle()).report.errors
            assert err.status == 400 and err.body is not None
            assert not leaks(str(err), key) and not leaks(err.body, key), at


async def test_no_piece_of_the_key_in_a_poll_error_line(tmp_path: Path, log_lines: io.StringIO) -> None:
    """The same answers through the daemon: its ``poll.error`` lines, every position, both providers."""
    clock = ManualClock()
    scenario = story()
    async with fake_server("exa", scenario, clock) as exa, fake_server("olostep", scenario, clock) as olostep:
        (tmp_path / "rules.yaml").write_text("rules: []\n")
        providers: dict[str, Any] = {
            name: {
                "base_url": fake.base_url,
                "api_key": KEYS[name],
                "retries": 0,
                "max_requests_per_second": 1e5,
            }
            for name, fake in (("exa", exa), ("olostep", olostep))
        }
        (tmp_path / "runwatch.yaml").write_text(
            f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\nrule_files: [rules.yaml]\n"
            f"providers: {providers}\n"
        )
        daemon = Daemon(load_config(tmp_path / "runwatch.yaml"), clock=clock)
        try:
            for name, fake in (("exa", exa), ("olostep", olostep)):
                for at in range(401):
                    fake.fake.faults.add(Fault(kind="echo_key", status=400, echo_at=at, size=1000, count=1))
                    start = log_lines.tell()
                    assert not await daemon.poll_once(name)
                    log_lines.seek(start)
                    lines = [line for line in log_lines.read().splitlines() if "poll.error" in line]
                    assert len(lines) == 1 and "http_400" in lines[0]
                    assert not leaks(lines[0], KEYS[name]), (name, at)
        finally:
            daemon.store.close()
            for src in daemon.sources.values():
                await src.aclose()
