"""runwatch benchmark: CPU per poll beside a bare httpx loop, memory per run, detection-to-send latency.

    python bench/bench.py --monitors 100 --runs 10        # N monitors x M runs = 1000 tracked runs

The fake Exa server runs in its own process (``runwatch fake exa``), so the CPU measured here is the
poller's alone. Every figure is printed beside a baseline measured in the same run against the same
server, so a busy machine still gives an honest ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import httpx

from runwatch.config import load_config
from runwatch.demo.receiver import Receiver
from runwatch.fakes import dump_scenario, generate_scenario
from runwatch.httpserver import serve
from runwatch.service.app import Daemon

KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class FakeProcess:
    """``runwatch fake exa`` in a subprocess, serving a generated scenario."""

    def __init__(self, scenario_text: str, workdir: Path) -> None:
        path = workdir / f"scenario-{time.monotonic_ns()}.yaml"
        path.write_text(scenario_text)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runwatch",
                "fake",
                "exa",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--scenario",
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.base_url = line.strip().split("base_url=")[-1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_config(workdir: Path, base_url: str, receiver_port: int | None, interval: str) -> Path:
    rules = workdir / "rules"
    rules.mkdir(exist_ok=True)
    channel = f"json://127.0.0.1:{receiver_port}/bench" if receiver_port else "json://127.0.0.1:9/none"
    (rules / "bench.yaml").write_text(
        "rules:\n  - {name: every-status, match: {provider: exa, kind: run.status}, notify: [bench]}\n"
    )
    cfg = workdir / "runwatch.yaml"
    cfg.write_text(
        f"state_dir: state-{time.monotonic_ns()}\nmetrics_listen: 127.0.0.1:0\n"
        f"providers:\n  exa: {{base_url: '{base_url}', api_key: {KEY}, poll_interval: {interval},"
        f" idle_poll_interval: {interval}, max_requests_per_second: 100000, concurrency: 8}}\n"
        f"channels:\n  bench: {{apprise: '{channel}'}}\n"
        "delivery: {concurrency: 4, retry_initial: 100ms}\n"
    )
    return cfg


async def bare_httpx(base_url: str, cycles: int) -> tuple[float, int]:
    """The floor: the same requests a poll makes, JSON decoded, nothing else."""
    requests = 0
    async with httpx.AsyncClient(
        base_url=base_url, headers={"x-api-key": KEY}, limits=httpx.Limits(max_connections=8)
    ) as client:
        sem = anyio.Semaphore(8)

        async def get(path: str, params: dict[str, Any]) -> Any:
            nonlocal requests
            async with sem:
                requests += 1
                return (await client.get(path, params=params)).json()

        start = cpu()
        for _ in range(cycles):
            monitors = await get("/v0/monitors", {"limit": 200})
            ids = [m["id"] for m in monitors["data"]]
            while monitors.get("hasMore"):
                monitors = await get("/v0/monitors", {"limit": 200, "cursor": monitors["nextCursor"]})
                ids += [m["id"] for m in monitors["data"]]
            async with anyio.create_task_group() as tg:
                for mid in ids:
                    tg.start_soon(get, f"/v0/monitors/{mid}/runs", {"limit": 50})
        return cpu() - start, requests


async def runwatch_polls(cfg: Path, cycles: int) -> tuple[float, int, int]:
    daemon = Daemon(load_config(cfg))
    await daemon.poll_once("exa")  # baseline poll: state written once, not part of the steady state
    req = daemon.metrics.registry.get_sample_value
    before = sum(
        req("runwatch_api_requests_total", {"provider": "exa", "endpoint": e}) or 0
        for e in ("list_monitors", "list_runs", "get_run")
    )
    start = cpu()
    for _ in range(cycles):
        await daemon.poll_once("exa")
    spent = cpu() - start
    after = sum(
        req("runwatch_api_requests_total", {"provider": "exa", "endpoint": e}) or 0
        for e in ("list_monitors", "list_runs", "get_run")
    )
    tracked = daemon.store.runs.tracked()
    daemon.store.close()
    await daemon.sources["exa"].aclose()
    return spent, int(after - before), tracked


async def memory_per_run(cfg: Path) -> tuple[float, int]:
    tracemalloc.start()
    daemon = Daemon(load_config(cfg))
    before = tracemalloc.get_traced_memory()[0]
    await daemon.poll_once("exa")
    await daemon.poll_once("exa")
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    n = daemon.store.runs.tracked()
    daemon.store.close()
    await daemon.sources["exa"].aclose()
    return (after - before) / max(n, 1), n


async def latency(workdir: Path, monitors: int, runs: int, story: float) -> list[float]:
    """Runs finishing over ``story`` seconds, polled every 500 ms: detection-to-send per notification."""
    spacing = story / max(runs, 1)
    text = dump_scenario(
        generate_scenario(
            monitors, runs, provider="exa", start=2.0, spacing=spacing, duration=spacing / 2, seed=1
        )
    )
    fake = FakeProcess(text, workdir)
    try:
        receiver = Receiver()
        async with serve(receiver.app, "127.0.0.1:0") as recv:
            cfg = write_config(workdir, fake.base_url, recv.port, "500ms")
            daemon = Daemon(load_config(cfg))
            async with daemon.running():
                await anyio.sleep(story + 4.0)
                for _ in range(2):
                    await daemon.wait_polls("exa", daemon.polls_done["exa"] + 1)
                with anyio.move_on_after(60):
                    await daemon.deliverer.wait_empty()
                rows = daemon.store.db.execute(
                    "SELECT finished_at, detected_at FROM notifications WHERE state = 'sent'"
                ).fetchall()
    finally:
        fake.stop()
    return [float(sent) - float(detected) for sent, detected in rows]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


async def main(args: argparse.Namespace) -> None:
    n, m = args.monitors, args.runs
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        workdir = Path(tmp)
        # Every run in flight for the whole measurement: each poll reads and diffs all N x M runs.
        steady = dump_scenario(
            generate_scenario(n, m, provider="exa", start=-60.0, spacing=0.0, duration=7200.0)
        )
        fake = FakeProcess(steady, workdir)
        try:
            base_cpu, base_req = await bare_httpx(fake.base_url, args.cycles)
            cfg = write_config(workdir, fake.base_url, None, "1h")
            rw_cpu, rw_req, tracked = await runwatch_polls(cfg, args.cycles)
            mem, mem_runs = await memory_per_run(write_config(workdir, fake.base_url, None, "1h"))
        finally:
            fake.stop()
        lat = await latency(workdir, min(n, 50), max(1, args.latency_runs // min(n, 50)), args.story)
    print(
        f"runwatch benchmark: {n} monitors x {m} runs = {tracked} tracked runs, {args.cycles} poll cycles,"
        f" python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(
        f"  CPU per poll cycle     runwatch {1000 * rw_cpu / args.cycles:8.1f} ms"
        f"   bare httpx loop {1000 * base_cpu / args.cycles:8.1f} ms   ratio {rw_cpu / base_cpu:5.2f}x"
    )
    print(
        f"  CPU per request        runwatch {1e6 * rw_cpu / rw_req:8.0f} us"
        f"   bare httpx loop {1e6 * base_cpu / base_req:8.0f} us   ({rw_req} vs {base_req} requests)"
    )
    print(
        f"  polls per second/core  runwatch {args.cycles / rw_cpu:8.2f}"
        f"      bare httpx loop {args.cycles / base_cpu:8.2f}"
    )
    print(f"  runs checked per second per core: {tracked * args.cycles / rw_cpu:,.0f}")
    print(
        f"  memory per tracked run {mem:8.0f} bytes (tracemalloc over the first two polls, {mem_runs} runs)"
    )
    print(
        f"  detection-to-send      p50 {1000 * pct(lat, 50):6.1f} ms   p99 {1000 * pct(lat, 99):6.1f} ms"
        f"   ({len(lat)} json:// notifications to a loopback receiver)"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--monitors", type=int, default=100)
    p.add_argument("--runs", type=int, default=10, help="runs per monitor")
    p.add_argument("--cycles", type=int, default=10, help="steady-state poll cycles to measure")
    p.add_argument("--latency-runs", type=int, default=200, help="runs that finish during the latency phase")
    p.add_argument("--story", type=float, default=10.0, help="seconds over which those runs finish")
    anyio.run(main, p.parse_args())
