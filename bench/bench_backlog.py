"""runwatch outbox benchmark (issue 18): one Olostep run of 3,000 steps, each notified, and a backlog.

    python bench/bench_backlog.py              # backlogs of 1,000 and 10,000 rows, 5 rounds
    python bench/bench_backlog.py --quick      # 300 and 3,000 rows, one round: a smoke test

Every row is an alert as the pipeline makes it for one step of an Olostep run that has logged 3,000
steps (the run endpoint's answer, ``derive()``, ``diff()``, a rule on ``kind: run.event``,
``alerts_for()``), queued in one ``State.record()`` and drained by a ``Deliverer`` through a signed
``WebhookChannel`` to a receiver in its own process (``bench_delivery.py --serve``).

1. bytes per outbox row: the state file (after a WAL checkpoint) over the rows queued, beside the JSON
   alert the receiver gets and the run endpoint's answer (what each row held when an alert kept the
   run with its event list).
2. drain rate (sends/s, wall clock) with a 10,000-row backlog beside a 1,000-row one: it must not fall
   as the backlog grows (goal: ratio >= 0.9). Compared like for like, the first 1,000 sends of each
   (all of the large backlog still queued behind them); the whole drains and the CPU per send are
   printed too, and a direct ``WebhookChannel.send`` loop over the same alerts, no outbox.
3. ``expire`` (nothing due) and ``claim`` (a batch of 64, then released) per call at each backlog.
4. the same alerts as they were stored before (the run with all its events, and the one pending index
   on ``(channel, seq)``), at a small backlog (``--before``, 0 to skip): what the issue reported,
   measured in the same run.

Each round measures the backlogs and the direct loop back to back, in an order that rotates; each
figure is the median over the rounds, a ratio the median of the rounds' own ratios. Exit status 1 if
the receiver's count of any drain is not exactly the backlog.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_delivery import Measure, ReceiverProcess, drain, measured, median, state_size

STEPS = 3000
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RULES = "rules:\n  - {name: every-step, match: {provider: olostep, kind: run.event}, notify: [bench]}\n"


def run_detail(run: int, steps: int = STEPS) -> dict[str, Any]:
    """The run endpoint's answer for a run that has logged ``steps`` steps (as the fake serves it)."""
    start = 1_780_000_000_000 + run * 10_000_000
    return {
        "monitor_id": "monitor_long",
        "run_id": f"run_long_{run:03d}",
        "snapshot": {"price": 39, "currency": "EUR", "title": "Espresso machine, 15 bar"},
        "log_group": "/olostep/monitors/monitor_long",
        "events": [
            {
                "id": f"evt_{run:03d}_{i:05d}",
                "ts": start + 10 * i,
                "ingestion_ts": start + 10 * i + 120,
                "stream": "agent",
                "message": f"step {i:04d}: fetched https://shop.example.com/item/{i} in 412 ms (200)",
                "event": {"type": "node_start", "node": f"fetch_{i % 7}", "attempt": 1},
            }
            for i in range(steps)
        ],
    }


class Alerts:
    """Alerts for the steps of 3,000-step runs, made by the pipeline's own functions."""

    def __init__(self, workdir: Path) -> None:
        from runwatch.rules import load_rules

        path = workdir / "rules.yaml"
        path.write_text(RULES)
        [self.rule] = load_rules([path], channels={"bench"})
        self.runs = 0

    def make(self, n: int, *, whole_run: bool = False) -> list[Any]:
        """``n`` alerts, from as many fresh runs as it takes; ``whole_run``: each keeps the run's
        answer with every event, as an alert did before."""
        from runwatch.model import ChangeKind
        from runwatch.pipeline.detect import diff
        from runwatch.pipeline.match import alerts_for
        from runwatch.sources.olostep import derive

        out: list[Any] = []
        while len(out) < n:
            self.runs += 1
            detail = run_detail(self.runs)
            snap = derive("monitor_long", detail["run_id"], detail, None, None)
            for change in diff(None, snap, time.time()):
                if change.kind is ChangeKind.RUN_EVENT and len(out) < n:
                    [alert] = alerts_for(self.rule.decide(change))
                    out.append(dataclasses.replace(alert, run=detail) if whole_run else alert)
        return out


@dataclasses.dataclass
class Backlog:
    rows: int
    drain: Measure
    #: The first ``--first`` sends of the drain, while the whole backlog is still (almost) queued.
    first: Measure
    bytes_per_row: float
    expire_us: float
    claim_us: float


class Bench:
    def __init__(self, receiver: ReceiverProcess, workdir: Path) -> None:
        self.receiver = receiver
        self.workdir = workdir
        self.alerts = Alerts(workdir)
        self.seq = 0
        self.errors: list[str] = []

    def path(self, what: str) -> str:
        self.seq += 1
        return f"/{what}-{self.seq}"

    def check(self, what: str, path: str, expected: int) -> None:
        got = self.receiver.stats(path)["count"]
        if got != expected:
            self.errors.append(f"{what}: the receiver got {got} requests on {path}, expected {expected}")

    def backlog(self, rows: int, first_n: int, *, whole_run: bool = False) -> Backlog:
        """Queue ``rows`` alerts in one record(), time expire and claim on them, then drain them."""
        from runwatch.delivery.webhook import WebhookChannel
        from runwatch.metrics import Metrics
        from runwatch.store import Notification, State

        path = self.path("before" if whole_run else f"backlog-{rows}")
        channel = WebhookChannel("bench", f"http://127.0.0.1:{self.receiver.port}{path}", [SECRET])
        state = State(Path(tempfile.mkdtemp(prefix="state-", dir=self.workdir)))
        if whole_run:  # and the one pending index the outbox had then
            state.db.executescript(
                "DROP INDEX notifications_due; DROP INDEX notifications_expiry;"
                " CREATE INDEX notifications_pending ON notifications (channel, seq) WHERE state = 'pending';"
            )
        notes = [Notification(a) for a in self.alerts.make(rows, whole_run=whole_run)]
        size0 = state_size(state)
        now = time.time()
        state.record("olostep", [], notes, now)
        per_row = (state_size(state) - size0) / rows
        out = state.outbox
        calls = 20
        t0 = time.perf_counter()
        for _ in range(calls):
            out.expire("bench", now - 86400, now)
        expire_us = 1e6 * (time.perf_counter() - t0) / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            out.release([c.seq for c in out.claim("bench", now, 64, "bench", 60)])
        claim_us = 1e6 * (time.perf_counter() - t0) / calls
        first: list[Measure] = []
        drained = drain(state, "bench", channel, rows, Metrics(), first, min(first_n, rows))
        if drained is None or not first:
            self.errors.append(f"backlog {rows}: the outbox did not drain within the time limit")
            drained = Measure(rows, float("inf"), float("inf"))
            first = [drained]
        channel.close()
        if out.counts() != {("bench", "sent"): rows}:
            self.errors.append(f"backlog {rows}: {out.counts()} in the outbox, expected {rows} sent")
        state.close()
        self.check(f"backlog {rows}", path, rows)
        return Backlog(rows, drained, first[0], per_row, expire_us, claim_us)

    def direct(self, rows: int) -> Measure:
        """The same alerts sent by a bare ``WebhookChannel.send`` loop: no outbox."""
        from runwatch.delivery.webhook import WebhookChannel

        alerts = self.alerts.make(rows)
        path = self.path("direct")
        channel = WebhookChannel("bench", f"http://127.0.0.1:{self.receiver.port}{path}", [SECRET])
        sent: list[Measure] = []
        with measured(rows, sent):
            for a in alerts:
                channel.send(a)
        channel.close()
        self.check("direct send", path, rows)
        return sent[0]


def middle(items: list[Backlog], figure: Callable[[Backlog], float]) -> float:
    """The median of one figure over the rounds (each figure its own median)."""
    return statistics.median(figure(b) for b in items)


def run(args: argparse.Namespace) -> int:
    import orjson

    from runwatch import log as logsetup

    logsetup.setup("info", "logfmt", sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    small, large = (300, 3000) if args.quick else (args.small, args.large)
    rounds = 1 if args.quick else args.rounds
    receiver = ReceiverProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
            b = Bench(receiver, Path(tmp))
            b.backlog(50, 50)  # warm-up: imports, the first connection, SQLite caches
            b.direct(50)
            smalls: list[Backlog] = []
            larges: list[Backlog] = []
            directs: list[Measure] = []
            for i in range(rounds):
                steps: list[Callable[[], None]] = [
                    lambda: smalls.append(b.backlog(small, small)),
                    lambda: larges.append(b.backlog(large, small)),
                    lambda: directs.append(b.direct(small)),
                ]
                k = i % len(steps)
                for step in steps[k:] + steps[:k]:
                    step()
            before = b.backlog(args.before, args.before, whole_run=True) if args.before else None
            sample = b.alerts.make(1)[0]
            alert_bytes = len(orjson.dumps(sample.payload()))
            answer_bytes = len(orjson.dumps(run_detail(0)))
    finally:
        receiver.stop()

    d = median(directs)
    # Like for like: the first sends of the large backlog (all of it still queued) against the whole
    # small one, the same number of sends, so a busy moment of the machine weighs on both alike.
    ratios = [x.first.rate / y.first.rate for x, y in zip(larges, smalls, strict=True)]
    ratio = statistics.median(ratios)
    whole = statistics.median(x.drain.rate / y.drain.rate for x, y in zip(larges, smalls, strict=True))
    print(
        f"runwatch outbox benchmark: alerts for the steps of Olostep runs of {STEPS:,} steps,"
        f" {rounds} round(s), medians; python {sys.version.split()[0]}; receiver in its own process"
    )
    print(f"  {'':36} {f'{small:,}-row backlog':>22} {f'{large:,}-row backlog':>22}")

    def line(label: str, figure: Callable[[Backlog], float], unit: str = "", note: str = "") -> None:
        a, b = middle(smalls, figure), middle(larges, figure)
        width = 22 - len(unit)
        print(f"  {label:<36} {a:>{width},.0f}{unit} {b:>{width},.0f}{unit}{note}")

    line(
        "bytes per outbox row",
        lambda x: x.bytes_per_row,
        note=f"   (the JSON alert is {alert_bytes:,}; the run's answer, which each row held before,"
        f" {answer_bytes:,})",
    )
    line(
        f"drain rate, first {small:,} sends",
        lambda x: x.first.rate,
        "/s",
        f"   (direct WebhookChannel.send loop, no outbox: {d.rate:,.0f}/s)",
    )
    line("drain rate, whole backlog", lambda x: x.drain.rate, "/s")
    line(
        "drain CPU per send, us",
        lambda x: x.drain.us_cpu,
        note=f"   (direct send loop: {d.us_cpu:,.0f}; this process, every thread)",
    )
    line("expire, nothing due, us per call", lambda x: x.expire_us)
    line("claim 64 and release, us per call", lambda x: x.claim_us)
    if before is not None:
        print(
            f"  before (each row keeps the run with its {STEPS:,} events; the old index),"
            f" {before.rows:,}-row backlog:"
            f" {before.bytes_per_row:,.0f} bytes per row, {before.drain.rate:,.0f} sends/s,"
            f" expire {before.expire_us:,.0f} us, claim {before.claim_us:,.0f} us"
        )
    verdict = "meets" if ratio >= 0.9 else "MISSES"
    each = " ".join(f"{x:.2f}" for x in ratios)
    print("ratios")
    print(
        f"  {'drain rate, large vs small backlog':<36} {ratio:5.2f}x   goal >= 0.9x: {verdict:6}"
        f"   (first {small:,} sends; rounds: {each}; whole drains: {whole:.2f}x)"
    )
    vs_direct = middle(smalls, lambda x: x.drain.rate) / d.rate
    print(f"  {'drain rate vs direct send':<36} {vs_direct:5.2f}x   ({small:,}-row backlog)")
    if b.errors:
        print("ERRORS")
        for e in b.errors:
            print(f"  {e}")
        return 1
    print("counts: the receiver got exactly each backlog's requests")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=1000, help="the smaller backlog (default 1000)")
    p.add_argument("--large", type=int, default=10000, help="the larger backlog (default 10000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is printed")
    p.add_argument("--before", type=int, default=200, help="rows stored as before (0: skip)")
    p.add_argument("--quick", action="store_true", help="300 and 3,000 rows, one round")
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
