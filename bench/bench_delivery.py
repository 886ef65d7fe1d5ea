"""runwatch delivery benchmark: a burst through the outbox, each figure beside a bare loop in the same run.

    python bench/bench_delivery.py --n 1000        # 1,000 notifications per round
    python bench/bench_delivery.py --quick         # 200 per round, one round: a smoke test

1. apprise ``json://``: runwatch's sends/s (outbox -> Deliverer -> AppriseChannel) beside a bare
   apprise loop (``Apprise().add(url)``, ``notify()`` on one thread). Goal: ratio >= 0.9.
2. webhook: runwatch's deliveries/s (signed per Standard Webhooks) beside a bare sync ``httpx.Client``
   POSTing the same bodies in a loop. Goals: >= 1,000/s on one core, ratio >= 0.8.
3. the outbox's cost per notification: CPU (queueing in the recorder's transaction, plus everything
   the delivery side does around a send) and bytes in the state file, beside a direct
   ``WebhookChannel.send`` loop that has no outbox.
4. a channel's ``rate``: webhook deliveries/s with a rate that never binds (each send takes its slot in
   the state's send window first), beside runwatch without a rate. Goal: ratio >= 0.8.

The receiver is a tiny asyncio HTTP/1.1 server in its own process (its CPU is not counted here); it
counts the requests per path, and each round posts to a path of its own, so every round checks that
exactly N requests arrived. One webhook request per round is verified with the ``standardwebhooks``
package, as a receiver would. CPU is the whole process's (every thread), from ``getrusage``;
throughput is wall-clock. Each round measures a baseline and runwatch back to back (in alternating
order); the table shows the median round, a ratio is the median of the rounds' own ratios.
Exit status 1 if a count or a signature is wrong; a missed ratio is printed, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A rate no burst here reaches: each send still takes its slot in the state (one short transaction).
UNBOUND = "1000000/s"

# --------------------------------------------------------------------------------------------------
# The receiver: its own process, started as ``bench_delivery.py --serve``. Standard library only.
# --------------------------------------------------------------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class _Counts:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.first: dict[str, dict[str, Any]] = {}
        self.bad = 0


class _Http(asyncio.Protocol):
    """Just enough HTTP/1.1: request line, headers, a content-length body, keep-alive."""

    def __init__(self, counts: _Counts) -> None:
        self.counts = counts
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path, _ = head[0].split(" ", 2)
            self.handle(method, path, headers, body)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        c = self.counts
        if method == "GET" and path.startswith("/__stats/"):
            key = "/" + path.removeprefix("/__stats/")
            ru = resource.getrusage(resource.RUSAGE_SELF)
            out = json.dumps(
                {
                    "count": c.count.get(key, 0),
                    "first": c.first.get(key),
                    "bad": c.bad,
                    "cpu": ru.ru_utime + ru.ru_stime,
                }
            ).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(out), out)
            )
        elif method == "POST":
            if "chunked" in headers.get("transfer-encoding", ""):
                c.bad += 1
            n = c.count.get(path, 0)
            c.count[path] = n + 1
            if n == 0:
                c.first[path] = {"headers": headers, "body": base64.b64encode(body).decode()}
            self.transport.write(_OK)
        else:
            c.bad += 1
            self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        if headers.get("connection", "").lower() == "close":
            self.transport.close()


def serve_receiver() -> None:
    async def main() -> None:
        counts = _Counts()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Http(counts), "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        print(f"port={port}", flush=True)
        # Ends when the benchmark closes our stdin (or dies).
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


class ReceiverProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("port="):
            raise SystemExit(f"receiver did not start: {line!r}")
        self.port = int(line.removeprefix("port="))

    def stats(self, path: str) -> dict[str, Any]:
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.port}/__stats{path}", timeout=10)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------------------


def cpu() -> float:
    """CPU seconds of this whole process, every thread (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Measure:
    n: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.n / self.wall

    @property
    def per_core(self) -> float:
        return self.n / self.cpu

    @property
    def us_cpu(self) -> float:
        return 1e6 * self.cpu / self.n


@contextlib.contextmanager
def measured(n: int, out: list[Measure]) -> Iterator[None]:
    c0, t0 = cpu(), time.perf_counter()
    yield
    out.append(Measure(n, time.perf_counter() - t0, cpu() - c0))


def median(ms: list[Measure]) -> Measure:
    """The round with the median wall time (its CPU with it, so the pair stays consistent)."""
    return sorted(ms, key=lambda m: m.wall)[len(ms) // 2]


class Bench:
    def __init__(self, n: int, rounds: int, receiver: ReceiverProcess, workdir: Path) -> None:
        self.n = n
        self.rounds = rounds
        self.receiver = receiver
        self.workdir = workdir
        self.seq = 0
        self.errors: list[str] = []
        #: The receiver's own CPU during the fastest loop (bare httpx), to show it is not the bottleneck.
        self.receiver_load: list[Measure] = []
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    def path(self, what: str) -> str:
        self.seq += 1
        return f"/{what}-{self.seq}"

    def check_count(self, what: str, path: str, expected: int) -> dict[str, Any]:
        got = self.receiver.stats(path)
        if got["count"] != expected or got["bad"]:
            self.errors.append(
                f"{what}: the receiver got {got['count']} requests on {path}, expected {expected}"
                + (f" ({got['bad']} malformed)" if got["bad"] else "")
            )
        return got

    # -- alerts as the pipeline decides them ------------------------------------------------------------
    def alerts(self, n: int, channel: str) -> list[Any]:
        from runwatch.model import Alert, notification_id

        self.seq += 1
        now = time.time()
        out = []
        for i in range(n):
            run_id = f"run_{self.seq:04d}_{i:06d}"
            monitor = f"monitor_prod_{i % 40:02d}"
            out.append(
                Alert(
                    id=notification_id(f"exa:{run_id}:status:failed", "exa-run-failed", channel),
                    type="run.status",
                    channel=channel,
                    provider="exa",
                    monitor_id=monitor,
                    run_id=run_id,
                    rule="exa-run-failed",
                    severity="critical",
                    title=f"exa monitor {monitor}: run {run_id} failed",
                    body="Quota exceeded: the run stopped after 412 of 500 items.\nSee the Exa dashboard.",
                    detected_at=now,
                    occurred_at=now - 1.5,
                    from_status="running",
                    to_status="failed",
                    failed_reason="Quota exceeded",
                    labels={"team": "ops", "env": "prod"},
                    run={
                        "id": run_id,
                        "object": "monitor_run",
                        "status": "failed",
                        "monitorId": monitor,
                        "type": "search",
                        "failedReason": "Quota exceeded",
                        "createdAt": "2026-11-30T10:40:00.000Z",
                        "updatedAt": "2026-11-30T10:46:41.123Z",
                        "completedAt": None,
                        "canceledAt": None,
                        "failedAt": "2026-11-30T10:46:41.123Z",
                    },
                )
            )
        return out

    # -- runwatch: a burst through the outbox ---------------------------------------------------------
    def through_outbox(
        self, make_channel: Callable[[str], Any], n: int, rate: str | None = None
    ) -> tuple[Measure, Measure, int]:
        """Queue ``n`` in one record(), then Deliverer until wait_empty(): (record, deliver, bytes)."""
        from runwatch.metrics import Metrics
        from runwatch.store import Notification, State

        state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=self.workdir))
        state = State(state_dir)
        name = "bench"
        channel = make_channel(name)
        notes = [Notification(a) for a in self.alerts(n, name)]
        size0 = state_size(state)
        recorded: list[Measure] = []
        with measured(n, recorded):
            state.record("exa", [], notes, time.time())
        metrics = Metrics()
        delivered = drain(state, name, channel, n, metrics, rate=rate)
        if delivered is None:
            self.errors.append(f"{channel.kind}: the outbox did not drain within the time limit")
            delivered = Measure(n, float("inf"), float("inf"))
        sent = metrics.registry.get_sample_value("runwatch_notifications_sent_total", {"channel": name}) or 0
        counts = state.outbox.counts()
        if int(sent) != n or counts.get((name, "sent"), 0) != n:
            self.errors.append(
                f"{channel.kind}: runwatch counted {int(sent)} sent ({counts} in the outbox), expected {n}"
            )
        per_row = (state_size(state) - size0) / n
        state.close()
        return recorded[0], delivered, round(per_row)

    # -- 1. apprise json:// ------------------------------------------------------------------------------
    def apprise_bare(self, n: int, out: list[Measure]) -> None:
        import apprise

        alerts = self.alerts(n, "bench")
        path = self.path("apprise-bare")
        a = apprise.Apprise()
        a.add(f"json://127.0.0.1:{self.receiver.port}{path}")
        ok = 0
        with measured(n, out):
            for al in alerts:
                ok += bool(
                    a.notify(
                        title=al.title,
                        body=al.body,
                        notify_type=apprise.NotifyType.FAILURE,
                        body_format=apprise.NotifyFormat.TEXT,
                    )
                )
        if ok != n:
            self.errors.append(f"bare apprise: {n - ok} of {n} sends failed")
        self.check_count("bare apprise", path, n)

    def apprise_runwatch(self, n: int, out: list[Measure]) -> None:
        from runwatch.delivery.apprise import AppriseChannel

        path = self.path("apprise-runwatch")
        url = f"json://127.0.0.1:{self.receiver.port}{path}"
        _, deliver, _ = self.through_outbox(lambda name: AppriseChannel(name, url), n)
        out.append(deliver)
        self.check_count("runwatch apprise", path, n)

    # -- 2. webhook ----------------------------------------------------------------------------------------
    def webhook_bare(self, n: int, out: list[Measure]) -> None:
        import httpx
        import orjson

        bodies = [orjson.dumps(a.payload()) for a in self.alerts(n, "bench")]
        path = self.path("webhook-bare")
        url = f"http://127.0.0.1:{self.receiver.port}{path}"
        headers = {"content-type": "application/json"}
        ok = 0
        receiver_cpu = self.receiver.stats(path)["cpu"]
        with httpx.Client(timeout=10, follow_redirects=False) as client, measured(n, out):
            for body in bodies:
                ok += client.post(url, content=body, headers=headers).status_code == 200
        if ok != n:
            self.errors.append(f"bare httpx: {n - ok} of {n} posts failed")
        got = self.check_count("bare httpx", path, n)
        self.receiver_load.append(Measure(n, out[-1].wall, got["cpu"] - receiver_cpu))

    def webhook_runwatch(self, n: int, out: list[Measure], queued: list[Measure], rows: list[int]) -> None:
        from runwatch.delivery.webhook import WebhookChannel

        path = self.path("webhook-runwatch")
        url = f"http://127.0.0.1:{self.receiver.port}{path}"
        record, deliver, per_row = self.through_outbox(
            lambda name: WebhookChannel(name, url, [self.secret]), n
        )
        out.append(deliver)
        queued.append(record)
        rows.append(per_row)
        got = self.check_count("runwatch webhook", path, n)
        self.verify_signature(got.get("first"))

    def webhook_rated(self, n: int, out: list[Measure]) -> None:
        """The same with a ``rate`` that never binds: what taking each send's slot in the state costs."""
        from runwatch.delivery.webhook import WebhookChannel

        path = self.path("webhook-rated")
        url = f"http://127.0.0.1:{self.receiver.port}{path}"
        _, deliver, _ = self.through_outbox(lambda name: WebhookChannel(name, url, [self.secret]), n, UNBOUND)
        out.append(deliver)
        self.check_count("runwatch webhook with a rate", path, n)

    def verify_signature(self, first: dict[str, Any] | None) -> None:
        from standardwebhooks.webhooks import Webhook

        if not first:
            self.errors.append("webhook: no request to verify")
            return
        body = base64.b64decode(first["body"])
        try:
            payload = Webhook(self.secret).verify(body, first["headers"])
        except Exception as exc:
            self.errors.append(f"webhook: the signature did not verify: {type(exc).__name__}: {exc}")
            return
        if payload.get("id") != first["headers"].get("webhook-id"):
            self.errors.append("webhook: body id and webhook-id differ")

    # -- 3. a direct send, no outbox ---------------------------------------------------------------------
    def direct_send(self, n: int, out: list[Measure]) -> None:
        from runwatch.delivery.webhook import WebhookChannel

        alerts = self.alerts(n, "bench")
        path = self.path("webhook-direct")
        channel = WebhookChannel("bench", f"http://127.0.0.1:{self.receiver.port}{path}", [self.secret])
        ok = 0
        with measured(n, out):
            for a in alerts:
                ok += type(channel.send(a)).__name__ == "Delivered"
        channel.close()
        if ok != n:
            self.errors.append(f"direct webhook send: {n - ok} of {n} failed")
        self.check_count("direct webhook send", path, n)


def drain(
    state: Any,
    name: str,
    channel: Any,
    n: int,
    metrics: Any,
    first: list[Measure] | None = None,
    k: int = 0,
    rate: str | None = None,
) -> Measure | None:
    """A ``Deliverer`` on ``channel`` until nothing is pending: the drain of ``n`` rows, timed (wall
    clock and this process's CPU); None if it did not drain within the time limit. With ``first``,
    the first ``k`` sends (or the batch that passes ``k``) are timed too, into it."""
    import anyio

    from runwatch.clock import SystemClock
    from runwatch.delivery import Deliverer
    from runwatch.delivery.policy import ChannelPolicy, parse_rate

    policies = {name: ChannelPolicy(rate=parse_rate(rate) if rate else None)}
    deliverer = Deliverer(state.outbox, state.sends, {name: channel}, policies, metrics, SystemClock())
    out: list[Measure] = []

    async def watch(c0: float, t0: float) -> None:
        assert first is not None
        worker = deliverer.workers[name]
        sent = 0.0
        while sent < k:
            await worker.wait_progress()
            sent = (
                metrics.registry.get_sample_value("runwatch_notifications_sent_total", {"channel": name}) or 0
            )
        first.append(Measure(int(sent), time.perf_counter() - t0, cpu() - c0))

    async def drive() -> None:
        async with anyio.create_task_group() as tg:
            with measured(n, out):
                if first is not None:
                    tg.start_soon(watch, cpu(), time.perf_counter())
                tg.start_soon(deliverer.run)
                with anyio.fail_after(max(60.0, n / 20)):
                    await deliverer.wait_empty()
            tg.cancel_scope.cancel()

    try:
        anyio.run(drive)
    except TimeoutError:
        return None
    return out[0]


def state_size(state: Any) -> int:
    """Bytes of the state file once the WAL is folded in (what it occupies at rest)."""
    state.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_count = state.db.execute("PRAGMA page_count").fetchone()[0]
    page_size = state.db.execute("PRAGMA page_size").fetchone()[0]
    return int(page_count) * int(page_size)


def ratio_line(label: str, ours: list[Measure], base: list[Measure], goal: float) -> str:
    """The median of each round's ratio (the pair measured back to back), and each round's."""
    ratios = [o.rate / b.rate for o, b in zip(ours, base, strict=True)]
    r = statistics.median(ratios)
    verdict = "meets" if r >= goal else "MISSES"
    each = " ".join(f"{x:.2f}" for x in ratios)
    return f"  {label:<34} {r:5.2f}x   goal >= {goal:.1f}x: {verdict:6}   (rounds: {each})"


def run(args: argparse.Namespace) -> int:
    import orjson

    from runwatch import log as logsetup

    # As the daemon runs: info level, so debug lines cost what they cost in production.
    logsetup.setup("info", "logfmt", sys.stderr)
    logging.getLogger("apprise").setLevel(logging.WARNING)
    n = 200 if args.quick and args.n is None else (args.n or 1000)
    rounds = 1 if args.quick else args.rounds
    receiver = ReceiverProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
            b = Bench(n, rounds, receiver, Path(tmp))
            # Warm-up (imports, first connections, SQLite caches): not counted.
            warm = min(n, 50)
            b.apprise_bare(warm, [])
            b.apprise_runwatch(warm, [])
            b.webhook_bare(warm, [])
            b.webhook_runwatch(warm, [], [], [])
            b.webhook_rated(warm, [])
            b.direct_send(warm, [])
            b.receiver_load.clear()
            ap_bare: list[Measure] = []
            ap_rw: list[Measure] = []
            wh_bare: list[Measure] = []
            wh_rw: list[Measure] = []
            wh_queued: list[Measure] = []
            wh_rows: list[int] = []
            direct: list[Measure] = []
            rated: list[Measure] = []
            for i in range(rounds):
                # The runs compared are measured back to back, in an order that rotates every
                # round, so drift (another process, the disk) cancels out of the ratios.
                groups: list[list[Callable[[], None]]] = [
                    [lambda: b.apprise_bare(n, ap_bare), lambda: b.apprise_runwatch(n, ap_rw)],
                    [
                        lambda: b.webhook_bare(n, wh_bare),
                        lambda: b.webhook_runwatch(n, wh_rw, wh_queued, wh_rows),
                        lambda: b.direct_send(n, direct),
                        lambda: b.webhook_rated(n, rated),
                    ],
                ]
                for group in groups:
                    k = i % len(group)
                    for step in group[k:] + group[:k]:
                        step()
            body_bytes = len(orjson.dumps(b.alerts(1, "bench")[0].payload()))
    finally:
        receiver.stop()

    apb, apr = median(ap_bare), median(ap_rw)
    whb, whr = median(wh_bare), median(wh_rw)
    print(
        f"runwatch delivery benchmark: {n} notifications per burst, {rounds} round(s), median shown;"
        f" python {sys.version.split()[0]}, {os.cpu_count()} cores; receiver in its own process"
    )
    print(f"  {'':34} {'runwatch':>22}   {'baseline':>22}")
    print(
        f"  {'apprise json:// sends/s':<34} {apr.rate:10,.0f}/s {apr.us_cpu:6.0f} us CPU"
        f"   {apb.rate:10,.0f}/s {apb.us_cpu:6.0f} us CPU   (bare apprise loop)"
    )
    print(
        f"  {'webhook deliveries/s':<34} {whr.rate:10,.0f}/s {whr.us_cpu:6.0f} us CPU"
        f"   {whb.rate:10,.0f}/s {whb.us_cpu:6.0f} us CPU   (bare httpx.Client loop)"
    )
    print(
        f"  {'webhook deliveries per CPU-second':<34} {whr.per_core:10,.0f}/s"
        f"   {'':>14}{whb.per_core:10,.0f}/s"
    )
    # Per round (the three runs are back to back), then the median: what the outbox adds to a send.
    rounds_wh = list(zip(wh_queued, wh_rw, direct, strict=True))
    through = statistics.median(q.us_cpu + d.us_cpu for q, d, _ in rounds_wh)
    queue_us = statistics.median(q.us_cpu for q, _, _ in rounds_wh)
    outbox_us = statistics.median(q.us_cpu + d.us_cpu - s.us_cpu for q, d, s in rounds_wh)
    print(
        f"  {'webhook CPU per notification':<34} {through:8.0f} us (queue {queue_us:.0f} + deliver)"
        f"   {statistics.median(s.us_cpu for s in direct):8.0f} us   (direct WebhookChannel.send, no outbox)"
    )
    print(
        f"  {'outbox cost per notification':<34} {outbox_us:8.0f} us CPU (median of the rounds' differences),"
        f" {statistics.median(wh_rows):,.0f} bytes in the state file (the JSON alert is {body_bytes:,})"
    )
    whrated = median(rated)
    print(
        f"  {'webhook with a rate, deliveries/s':<34} {whrated.rate:10,.0f}/s {whrated.us_cpu:6.0f} us CPU"
        f"   {whr.rate:10,.0f}/s {whr.us_cpu:6.0f} us CPU   (runwatch, no rate: {UNBOUND} never binds)"
    )
    print("ratios")
    print(ratio_line("apprise sends/s vs bare apprise", ap_rw, ap_bare, 0.9))
    print(ratio_line("webhook deliveries/s vs bare httpx", wh_rw, wh_bare, 0.8))
    print(ratio_line("with a rate vs without", rated, wh_rw, 0.8))
    goal = "meets" if whr.per_core >= 1000 else "MISSES"
    print(f"  {'webhook deliveries per CPU-second':<34} {whr.per_core:5,.0f}/s  goal >= 1,000/s: {goal}")
    if b.errors:
        print("ERRORS")
        for e in b.errors:
            print(f"  {e}")
        return 1
    load = median(b.receiver_load)
    print(
        f"receiver (own process, not counted): {load.us_cpu:.0f} us CPU per request,"
        f" busy {100 * load.cpu / load.wall:.0f} % of the bare httpx loop's wall time"
    )
    print(f"counts: every round's receiver got exactly its {n} requests; webhook signatures verified")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="notifications per burst (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per figure; the median is printed")
    p.add_argument("--quick", action="store_true", help="200 notifications, one round")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve_receiver()
        return
    sys.exit(run(args))


if __name__ == "__main__":
    main()
