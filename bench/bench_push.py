"""runwatch push benchmark: each figure beside its baseline, measured in the same run.

    python bench/bench_push.py                      # every figure (about 3 minutes)
    python bench/bench_push.py --only rate          # 1. pushes answered per second
    python bench/bench_push.py --only latency --poll-interval 60s   # 2. at the default interval
    python bench/bench_push.py --only requests                      # 3. requests per hour, on vs off

1. Verified pushes answered per second on one core: the push listener (``runwatch.service.ingest``:
   the Exa signature checked on the raw bytes, the envelope read, the hint committed to the SQLite
   state before the answer, the poller woken) served by ``runwatch.httpserver`` in a process of its
   own, pinned to one core; beside a bare Starlette app on the same uvicorn answering 200 to the same
   requests (the baseline), both driven by the same loopback client (raw asyncio, keep-alive
   connections, pre-signed requests with unique event ids, pinned to the other core). Reported: wall
   rate, and the server's rate per CPU-second (``/proc/<pid>/stat``), which is what one core can do
   whatever the client's speed. Goal: >= 2,000/s. Every answer must be 200 and every push accepted
   (the hints in the state are counted afterwards): otherwise exit 1.
2. Detection latency of the same run completions, push vs poll: a real daemon (in this process) on a
   fake Exa (its own process, on the wall clock) whose runs complete at known times, with a webhook
   channel to a receiver in this process; latency = the receiver's arrival time - the completion's
   time in the fake's scenario. Push: the fake posts ``monitor.run.completed`` to the daemon's
   ``ingest_listen``. Poll (the baseline): the same scenario, the same config, no webhook. Goal: push
   p99 <= 1 s on loopback. The fake's pusher looks at its clock every 50 ms: up to 50 ms of the push
   figure is the fake's, not runwatch's.
3. API requests in one hour for 1,000 mostly idle monitors per provider, push on beside push off (the
   baseline): an hour simulated on a ManualClock that the fakes (in this process) and a daemon share,
   60 cycles of ``poll_interval`` 60s (``idle_poll_interval`` 5m), each provider's requests counted by
   its fake. 2 % of the monitors have one run started by hand during the hour (8 minutes long, one in
   five failing; Olostep's log a step a minute). Push off: no ingest_listen, no webhooks, no live logs.
   Push on: the fakes post their webhooks to ingest_listen, Exa's events API stands in for the idle
   polls, Olostep's live logs are followed. The start's cycle (every monitor read once) is not
   counted. Both must see the same: every run ended as it did, every Olostep step once; else exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET = "whsec_bench_push_secret_0123456789abcdef"
#: The receiver's webhook channel secret (Standard Webhooks; the receiver does not check it here).
RX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HERE = Path(__file__).resolve()


# -- the servers of figure 1, each in its own process --------------------------------------------------
def serve(kind: str) -> None:
    """``--serve ingest|bare``: serve on a free port, print ``READY <port>``, stop when stdin closes."""
    import anyio
    from pydantic import SecretStr
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from runwatch.clock import SystemClock
    from runwatch.httpserver import serve as http_serve
    from runwatch.metrics import Metrics
    from runwatch.service.ingest import HookConfig, Ingest
    from runwatch.sources.exa import ExaSettings
    from runwatch.store import State

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            state = State(Path(tmp))
            woken: list[str] = []
            if kind == "ingest":
                exa = ExaSettings(api_key=SecretStr("k"), webhook_secret=[SecretStr(SECRET)])
                hooks = HookConfig.build({"exa": exa})
                app: Any = Ingest(state.hints, Metrics(), SystemClock(), woken.append, hooks)
            else:

                async def ok(request: Request) -> Response:
                    await request.body()
                    return Response(b'{"status":"accepted"}', media_type="application/json")

                app = Starlette(routes=[Route("/hooks/exa", ok, methods=["POST"])])
            async with http_serve(app, "127.0.0.1:0", name=kind) as http:
                print(f"READY {http.port}", flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)
            print(f"HINTS {len(state.hints.pending('exa'))} WOKEN {len(woken)}", flush=True)
            state.close()

    anyio.run(main)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        tail = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        return tail


@contextlib.contextmanager
def server(kind: str, core: int | None) -> Iterator[Server]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if core is not None:
        os.sched_setaffinity(proc.pid, {core})
    try:
        yield Server(proc, int(line[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def signed_requests(n: int, tag: str) -> list[bytes]:
    """``n`` pushes as raw HTTP/1.1 requests, each a new event (a new id), signed now."""
    out = []
    t = int(time.time())
    for i in range(n):
        body = json.dumps(
            {"id": f"evt_{tag}_{i}", "object": "event", "type": "monitor.run.completed",
             "createdAt": "2026-01-01T00:00:00.000Z",
             "data": {"id": f"mrun_{tag}_{i}", "monitorId": f"monitor_{i % 500}", "status": "completed"}},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        sig = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        head = (
            f"POST /hooks/exa HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"exa-signature: t={t},v1={sig}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def drive(port: int, requests: list[bytes], connections: int) -> tuple[float, dict[int, int]]:
    """Send every request over ``connections`` keep-alive connections; (seconds, statuses)."""
    statuses: dict[int, int] = {}
    it = iter(requests)

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for req in it:
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(connections)))
    return time.perf_counter() - began, statuses


def figure_rate(args: argparse.Namespace) -> bool:
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    rows: dict[str, list[tuple[float, float]]] = {"bare": [], "ingest": []}
    ok = True
    for rnd in range(args.rounds):
        for kind in ("bare", "ingest") if rnd % 2 == 0 else ("ingest", "bare"):
            with server(kind, server_core) as srv:
                reqs = signed_requests(args.n, f"{kind}{rnd}")
                asyncio.run(drive(srv.port, signed_requests(200, f"warm{kind}{rnd}"), args.connections))
                cpu0 = srv.cpu()
                seconds, statuses = asyncio.run(drive(srv.port, reqs, args.connections))
                cpu = srv.cpu() - cpu0
                tail = srv.stop()
            if statuses != {200: args.n}:
                print(f"  {kind}: answers {statuses}, expected {args.n} x 200", file=sys.stderr)
                ok = False
            if kind == "ingest" and f"HINTS {args.n + 200}" not in tail:
                print(f"  ingest: {tail.strip()}, expected {args.n + 200} hints", file=sys.stderr)
                ok = False
            rows[kind].append((args.n / seconds, args.n / cpu if cpu else float("inf")))
    bare_wall, bare_core = (statistics.median(x) for x in zip(*rows["bare"], strict=True))
    wall, per_core = (statistics.median(x) for x in zip(*rows["ingest"], strict=True))
    print(f"\n1. verified pushes answered ({args.n} per round, {args.connections} connections, median of"
          f" {args.rounds} rounds; server pinned to one core)")  # fmt: skip
    print(f"   {'':28} {'answered/s (wall)':>18} {'per server CPU-second':>22}")
    print(f"   {'bare Starlette 200 (base)':28} {bare_wall:>18,.0f} {bare_core:>22,.0f}")
    print(f"   {'runwatch push listener':28} {wall:>18,.0f} {per_core:>22,.0f}")
    print(f"   ratio {wall / bare_wall:.2f} (wall), {per_core / bare_core:.2f} (per CPU-second);"
          f" goal >= 2,000/s: {'met' if min(wall, per_core) >= 2000 else 'MISSED'}")  # fmt: skip
    return ok


# -- figure 2: detection latency, push vs poll ---------------------------------------------------------
def serve_fake(n: int, lead: float, spread: float) -> None:
    """``--serve-fake``: a fake Exa on the wall clock whose runs complete at known times."""
    import anyio

    from runwatch.clock import SystemClock
    from runwatch.fakes import Scenario, fake_server

    scenario = Scenario.model_validate(
        {"exa": {"monitors": [
            {"id": f"monitor_{i:03d}", "runs": [{"id": f"mrun_{i:03d}", "timeline": [
                {"at": lead, "status": "created"}, {"at": lead + 1, "status": "running"},
                {"at": lead + 2 + i * spread, "status": "completed"}]}]}
            for i in range(n)]}}
    )  # fmt: skip

    async def main() -> None:
        async with fake_server("exa", scenario, SystemClock()) as exa:
            print(f"READY {exa.base_url} {exa.fake.t0!r}", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)

    anyio.run(main)


async def one_path(push: bool, args: argparse.Namespace, tmp: Path) -> tuple[list[float], float | None]:
    """Latencies (s) of every completion through one path, and the daemon's mean push-to-read time."""
    import anyio
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from runwatch.config import load_config
    from runwatch.httpserver import serve as http_serve
    from runwatch.service.app import Daemon

    proc = subprocess.Popen(  # noqa: ASYNC220 (it answers one line at once; the bench waits for it)
        [sys.executable, str(HERE), "--serve-fake", str(args.runs), str(args.lead), str(args.spread)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    _, base_url, t0_text = proc.stdout.readline().split()
    t0 = float(t0_text)
    arrived: dict[str, float] = {}
    done = anyio.Event()

    async def hook(request: Request) -> Response:
        body = json.loads(await request.body())
        arrived.setdefault(body["run_id"], time.time())
        if len(arrived) == args.runs:
            done.set()
        return Response(status_code=204)

    try:
        rx_app = Starlette(routes=[Route("/rx", hook, methods=["POST"])])
        async with http_serve(rx_app, "127.0.0.1:0") as rx, httpx.AsyncClient() as client:
            ingest = f"127.0.0.1:{free_port()}"
            secret = ""
            if push:
                made = await client.post(f"{base_url}/v0/webhooks", headers={"x-api-key": "k"},
                                         json={"events": ["monitor.run.completed", "monitor.run.created"],
                                               "url": f"http://{ingest}/hooks/exa"})  # fmt: skip
                secret = made.json()["secret"]
            root = tmp / ("push" if push else "poll")
            root.mkdir()
            (root / "rules.yaml").write_text(
                "rules:\n  - {name: done, match: {kind: run.status, to: completed}, notify: [rx]}\n"
            )
            cfg = root / "runwatch.yaml"
            webhook = f", webhook_secret: {secret}" if push else ""
            cfg.write_text(
                f"state_dir: {root / 'state'}\nmetrics_listen: 127.0.0.1:0\nrule_files: [rules.yaml]\n"
                + (f"ingest_listen: {ingest}\n" if push else "")
                + f"providers:\n  exa: {{base_url: '{base_url}', api_key: k,"
                f" poll_interval: {args.poll_interval}, idle_poll_interval: 5m{webhook}}}\n"
                f"channels:\n  rx: {{webhook: {{url: '{rx.url}/rx', secret: {RX_SECRET}}}}}\n"
                "log_level: warning\n"
            )
            daemon = Daemon(load_config(cfg))
            async with daemon.running():
                last = t0 + args.lead + 2 + (args.runs - 1) * args.spread
                wait = max(0.0, last - time.time()) + 3 * parse_seconds(args.poll_interval) + 30
                with anyio.fail_after(wait):
                    await done.wait()
                mean = None
                labels = {"provider": "exa"}
                count = daemon.metrics.registry.get_sample_value(
                    "runwatch_push_to_read_seconds_count", labels
                )
                if push and count:
                    total = daemon.metrics.registry.get_sample_value(
                        "runwatch_push_to_read_seconds_sum", labels
                    )
                    mean = (total or 0.0) / count
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    return [arrived[f"mrun_{i:03d}"] - (t0 + args.lead + 2 + i * args.spread) for i in range(args.runs)], mean


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def parse_seconds(text: str) -> float:
    from runwatch.durations import parse_duration

    return parse_duration(text)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def figure_latency(args: argparse.Namespace) -> bool:
    import anyio

    with tempfile.TemporaryDirectory() as tmp:
        pushed, push_to_read = anyio.run(one_path, True, args, Path(tmp))
        polled, _ = anyio.run(one_path, False, args, Path(tmp))
    print(f"\n2. detection latency, run completed -> notification received ({args.runs} completions"
          f" {args.spread:g} s apart; poll_interval {args.poll_interval}, idle 5m)")  # fmt: skip
    print(f"   {'':24} {'p50':>9} {'p99':>9} {'max':>9}")
    for name, values in (("poll (baseline)", polled), ("push", pushed)):
        print(f"   {name:24} {pct(values, 0.5) * 1000:>7.0f}ms {pct(values, 0.99) * 1000:>7.0f}ms"
              f" {max(values) * 1000:>7.0f}ms")  # fmt: skip
    if push_to_read is not None:
        print(
            f"   push received -> run read (runwatch_push_to_read_seconds, mean): {push_to_read * 1e3:.0f} ms"
        )
    p99 = pct(pushed, 0.99)
    print(
        f"   push p99 / poll p99: {p99 / pct(polled, 0.99):.3f}; goal push p99 <= 1 s: "
        f"{'met' if p99 <= 1.0 else 'MISSED'}"
    )
    return True


# -- figure 3: API requests per hour, push on beside push off -----------------------------------------
def hour_scenario(monitors: int, share: float, seed: int) -> Any:
    """``monitors`` idle monitors per provider; ``share`` of them run once, by hand, in the hour."""
    import random

    from runwatch.fakes import Scenario

    rng = random.Random(seed)
    exa: list[dict[str, Any]] = [{"id": f"monitor_{i:04d}"} for i in range(monitors)]
    olostep: list[dict[str, Any]] = [{"id": f"monitor_{i:04d}"} for i in range(monitors)]
    for i in rng.sample(range(monitors), max(1, round(monitors * share))):
        at = rng.uniform(300, 3000)
        failed = rng.random() < 0.2
        end = {"at": at + 480, "status": "failed" if failed else "completed"}
        exa[i]["runs"] = [
            {
                "id": f"mrun_{i:04d}",
                "manual": True,
                "timeline": [{"at": at, "status": "created"}, {"at": at + 60, "status": "running"}, end],
            }
        ]
        done: dict[str, Any] = {"at": at + 480, "type": "run_complete"}
        if failed:
            done["data"] = {"status": "failed", "error": "generated failure"}
        steps = [{"at": at + 60 * k, "type": f"step_{k}"} for k in range(8)]
        olostep[i]["runs"] = [
            {
                "id": f"run_{i:04d}",
                "manual": True,
                "result": "failed" if failed else "completed",
                "events": [*steps, done],
            }
        ]
    return Scenario.model_validate({"exa": {"monitors": exa}, "olostep": {"monitors": olostep}})  # fmt: skip


Counts = dict[str, dict[str, int]]


async def one_hour(push: bool, args: argparse.Namespace, tmp: Path) -> tuple[Counts, dict[str, int]]:
    """(requests by provider and route, what was seen: runs by final status, steps) over one hour."""
    import math

    import anyio
    import httpx

    from runwatch import log as logsetup
    from runwatch.clock import ManualClock
    from runwatch.config import load_config
    from runwatch.fakes import fake_server
    from runwatch.service import live_logs
    from runwatch.service.app import Daemon
    from runwatch.store.leases import poll_lease

    class Driven(Daemon):
        """The daemon as it runs, but its regular cycles are the bench's, on the driven clock: its loop
        only reads what pushes ask for (a real minute between cycles would otherwise fire mid-hour)."""

        async def _poll_loop(self, name: str) -> None:
            fence = self.leadership.fence(poll_lease(name))
            assert fence is not None
            self._synced[name] = fence.token
            while await self.pollers.pause(name, math.inf):
                await self.read_pushed(name)

    logsetup.setup("error")
    live_logs.REFRESH = 0.02  # streams follow the runs in flight within a fraction of a driven minute
    scenario = hour_scenario(args.monitors, args.active, args.seed)
    clock = ManualClock(time.time())
    root = tmp / ("on" if push else "off")
    root.mkdir()
    async with (
        fake_server("exa", scenario, clock) as exa,
        fake_server("olostep", scenario, clock) as olostep,
        httpx.AsyncClient() as client,
    ):
        ingest = f"127.0.0.1:{free_port()}"
        token = "bench-olostep-webhook-token-0123456789abcdef"
        extra_exa, extra_olostep = "", ", live_logs: false"
        if push:
            made = await client.post(
                f"{exa.base_url}/v0/webhooks", headers={"x-api-key": "k"},
                json={"events": ["monitor.run.created", "monitor.run.completed"],
                      "url": f"http://{ingest}/hooks/exa"},
            )  # fmt: skip
            extra_exa = f", webhook_secret: {made.json()['secret']}"
            extra_olostep = f", webhook_token: {token}"
            for m in scenario.olostep.monitors:
                olostep.fake.set_webhook(m.id, f"http://{ingest}/hooks/olostep/{token}")
        common = "poll_interval: 60s, idle_poll_interval: 5m, max_requests_per_second: 100000"
        (root / "runwatch.yaml").write_text(
            f"state_dir: {root / 'state'}\nmetrics_listen: 127.0.0.1:0\nrule_files: []\n"
            + (f"ingest_listen: {ingest}\n" if push else "")
            + f"providers:\n  exa: {{base_url: '{exa.base_url}', api_key: k, {common}{extra_exa}}}\n"
            f"  olostep: {{base_url: '{olostep.base_url}', api_key: k, {common}{extra_olostep}}}\n"
            "log_level: error\n"
        )
        daemon = Driven(load_config(root / "runwatch.yaml"), clock=clock)
        fakes = {"exa": exa.fake, "olostep": olostep.fake}
        async with daemon.running():
            for name in daemon.sources:
                await daemon.poll_once(name)  # the start: every monitor read once (not counted)
            for fake in fakes.values():
                fake.requests.reset()
            for _ in range(60):
                clock.advance(60)
                for fake in fakes.values():
                    await fake.pusher.pump()  # this minute's webhooks, answered (their hints recorded)
                if push:
                    await daemon.live.wait_passes(2)  # streams opened for the runs in flight
                    await anyio.sleep(0.05)  # the reads pushes asked for, this minute's steps
                for name in daemon.sources:
                    await daemon.poll_once(name)
            requests = {p: dict(f.requests.by_route) for p, f in fakes.items()}
            # What both paths must agree on: how each run ended, and each Olostep step reported once.
            # (Push sees more of a run's way there: a pushed monitor is hot from its run's creation.)
            seen = {f"{p} runs {st}": n for (p, st), n in daemon.store.runs.status_counts().items()}
            steps = daemon.metrics.registry.get_sample_value(
                "runwatch_changes_detected_total", {"provider": "olostep", "kind": "run.event"}
            )
            seen["olostep steps"] = int(steps or 0)
    return requests, seen


def figure_requests(args: argparse.Namespace) -> bool:
    import anyio

    with tempfile.TemporaryDirectory() as tmp:
        off, off_changes = anyio.run(one_hour, False, args, Path(tmp))
        on, on_changes = anyio.run(one_hour, True, args, Path(tmp))
    active = max(1, round(args.monitors * args.active))
    print(f"\n3. API requests in one hour, {args.monitors:,} mostly idle monitors per provider ({active} of"
          " them run once in it); poll_interval 60s, idle 5m")  # fmt: skip
    print(f"   {'':26} {'push off (base)':>16} {'push on':>10}")
    for provider in ("exa", "olostep"):
        for route in sorted(set(off[provider]) | set(on[provider])):
            before, after = off[provider].get(route, 0), on[provider].get(route, 0)
            print(f"   {provider:<8} {route:<17} {before:>16,} {after:>10,}")
        total_off, total_on = sum(off[provider].values()), sum(on[provider].values())
        ratio = total_on / total_off if total_off else float("nan")
        print(f"   {provider:<8} {'total':<17} {total_off:>16,} {total_on:>10,}   on/off {ratio:.3f}")
    print(f"   seen, push off: {off_changes}")
    if on_changes != off_changes:
        print(f"   seen, push on:  {on_changes}: DIFFERENT, a path missed or repeated something")
        return False
    print("   seen, push on:  the same")
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["rate", "latency", "requests"])
    p.add_argument("--n", type=int, default=20_000, help="pushes per round (figure 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--runs", type=int, default=40, help="run completions (figure 2)")
    p.add_argument("--lead", type=float, default=6.0, help="seconds before the first run shows")
    p.add_argument("--spread", type=float, default=0.37, help="seconds between two completions")
    p.add_argument("--poll-interval", default="10s", help="poll_interval of both paths (figure 2)")
    p.add_argument("--monitors", type=int, default=1000, help="monitors per provider (figure 3)")
    p.add_argument("--active", type=float, default=0.02, help="share of them that run once (figure 3)")
    p.add_argument("--seed", type=int, default=0, help="of the runs' times (figure 3)")
    p.add_argument("--serve", choices=["ingest", "bare"], help=argparse.SUPPRESS)
    p.add_argument("--serve-fake", nargs=3, metavar=("N", "LEAD", "SPREAD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.serve_fake:
        serve_fake(int(args.serve_fake[0]), float(args.serve_fake[1]), float(args.serve_fake[2]))
        return 0
    ok = True
    if args.only in (None, "rate"):
        ok &= figure_rate(args)
    if args.only in (None, "latency"):
        ok &= figure_latency(args)
    if args.only in (None, "requests"):
        ok &= figure_requests(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
