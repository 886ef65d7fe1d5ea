"""runwatch failover benchmark, the lease alone: how long a provider goes unpolled when its leader dies.

    python bench/bench_failover.py                  # 20 rounds, lease 5s (about 3 minutes)
    python bench/bench_failover.py --quick          # 5 rounds, lease 1s: a smoke test
    python bench/bench_failover.py --url postgresql://...   # a database of yours (else a throwaway one)

Two :class:`~runwatch.service.leadership.Leadership` loops (the daemon's own code, real time, each with
its own connection) share one lease on a real PostgreSQL. Each round the holder's loop is cancelled at
a random point of its renewal cycle (as ``kill -9`` stops it: no release), and the time until the
standby leads is measured from the kill and from the holder's last successful renewal (what the bound
is about: the lease runs ``lease`` from there, and the standby asks every ``lease/3``). Both are
printed beside the bound, ``lease + lease/3``. Baseline, measured in the same run: a clean stop
(``release_all``, as SIGTERM does), which the standby takes at its next step, within ``lease/3``.
The whole daemon's failover (``kill -9``, ``poll_interval`` 1s) adds its first poll; that comes with
the PostgreSQL store.

Without ``--url`` a throwaway cluster is started as the tests start theirs (``tests/postgres.py``:
Debian's ``postgresql`` package, ``initdb`` in a temporary folder, a free loopback port).
A worst case over its bound is printed, not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel

from runwatch.metrics import Metrics
from runwatch.service.leadership import BootClock, Leadership
from runwatch.store.leases import poll_lease
from runwatch.store.postgres.leases import PostgresLeases


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' own cluster
    from tests.postgres import _start_cluster

    cluster = _start_cluster()
    running = next(cluster)
    try:
        yield running.url(running.create_database())
    finally:
        with contextlib.suppress(StopIteration):
            next(cluster)


async def one_round(url: str, n: int, lease: float, clean: bool) -> tuple[float, float]:
    """(from the stop, from the last renewal) to the standby leading, in seconds."""
    clock = BootClock()
    name = poll_lease(f"bench{n}{'c' if clean else 'k'}")
    made = [PostgresLeases(url), PostgresLeases(url)]
    try:
        holder, standby = (
            Leadership(x, x, instance=who, lease=lease, providers=[name[5:]], metrics=Metrics(), clock=clock)
            for x, who in zip(made, ("holder", "standby"), strict=True)
        )
        async with anyio.create_task_group() as tg:
            alive = anyio.CancelScope()

            async def run_holder() -> None:
                with alive:
                    await holder.run()

            tg.start_soon(run_holder)
            assert await holder.wait_leading(name, 10), "the holder never took the lease"
            await anyio.sleep(random.uniform(0, lease / 3))  # the standby's phase
            tg.start_soon(standby.run)
            await anyio.sleep(lease / 3 * 2 + random.uniform(0, lease / 3))  # the kill's point in the cycle
            alive.cancel()
            await anyio.lowlevel.checkpoint()
            stopped = clock.now()
            until = holder.held_until(name)
            assert until is not None
            if clean:
                await holder.release_all()
                stopped = clock.now()
            assert await standby.wait_leading(name, 3 * lease), "the standby never took over"
            led = clock.now()
            tg.cancel_scope.cancel()
        return led - stopped, led - (until - lease)
    finally:
        for x in made:
            x.close()


def row(label: str, values: list[float], bound: float, what: str) -> str:
    worst = max(values)
    verdict = "within" if worst <= bound else "OVER"
    return (
        f"{label:<40} {statistics.median(values):>7.2f} s {worst:>7.2f} s   {bound:>5.2f} s"
        f" ({what}) {verdict}"
    )


async def main(args: argparse.Namespace) -> int:
    lease = args.lease
    with database(args.url) as url:
        kills = [await one_round(url, i, lease, clean=False) for i in range(args.rounds)]
        stops = [await one_round(url, i, lease, clean=True) for i in range(args.rounds)]
    renew = lease / 3
    print(f"failover of the lease alone: PostgreSQL, lease {lease:g}s, renewed every {renew:.2f}s, "
          f"{args.rounds} rounds")  # fmt: skip
    print(f"{'':<40} {'median':>9} {'worst':>9}   {'bound':>7}")
    bound = lease + renew
    print(row("killed (no release) -> standby leads", [k for k, _ in kills], bound, "lease + renewal"))
    print(row("  from its last renewal", [r for _, r in kills], bound, "lease + renewal"))
    print(row("baseline: clean stop -> standby leads", [k for k, _ in stops], renew, "one renewal"))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lease", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--url", help="a PostgreSQL database to use (default: a throwaway cluster)")
    parser.add_argument("--quick", action="store_true", help="5 rounds, lease 1s")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.rounds, parsed.lease = 5, 1.0
    sys.exit(anyio.run(main, parsed))
