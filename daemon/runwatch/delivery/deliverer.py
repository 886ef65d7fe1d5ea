"""All channel workers of one daemon: start them, wake them, drain them on shutdown."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import anyio

from runwatch.clock import Clock
from runwatch.delivery.channel import Channel
from runwatch.delivery.policy import ChannelPolicy
from runwatch.delivery.worker import ChannelWorker
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.silences import Muter
from runwatch.store.outbox import SqliteOutbox

log = get_logger(__name__)


class Deliverer:
    """One :class:`ChannelWorker` per configured channel, over one outbox."""

    def __init__(
        self,
        outbox: SqliteOutbox,
        channels: Mapping[str, Channel],
        policies: Mapping[str, ChannelPolicy],
        metrics: Metrics,
        clock: Clock,
        muter: Muter | None = None,
    ) -> None:
        self.outbox = outbox
        self.channels = dict(channels)
        owner = f"{socket.gethostname()}:{os.getpid()}"
        self.workers = {
            name: ChannelWorker(
                ch, policies.get(name, ChannelPolicy()), outbox, metrics, clock, owner, muter=muter
            )
            for name, ch in self.channels.items()
        }
        for name in self.channels:
            metrics.circuit_open.labels(name).set(0)
        counts = outbox.counts()
        for stray in sorted(outbox.channels() - set(self.channels)):
            log.warning(
                "outbox.unknown_channel",
                channel=stray,
                pending=counts.get((stray, "pending"), 0),
                hint="kept in the state; configure the channel again to send them",
            )

    def wake(self, channels: set[str] | None = None) -> None:
        for name, worker in self.workers.items():
            if channels is None or name in channels:
                worker.wake()

    async def run(self) -> None:
        """Run every channel's worker until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                for worker in self.workers.values():
                    tg.start_soon(worker.run)
        finally:
            for ch in self.channels.values():
                ch.close()

    def pending(self) -> int:
        return self.outbox.pending_count(list(self.channels))

    async def wait_empty(self) -> None:
        """Until nothing is pending on any configured channel (sent or given up)."""
        while self.pending():
            with anyio.move_on_after(1.0):
                async with anyio.create_task_group() as tg:

                    async def progressed(worker: ChannelWorker) -> None:
                        await worker.wait_progress()
                        tg.cancel_scope.cancel()

                    for worker in self.workers.values():
                        tg.start_soon(progressed, worker)

    async def drain(self, timeout: float) -> None:
        """Send what is due now (a batch in flight finishes), for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            worker.drain(deadline)
        with anyio.move_on_after(timeout + 1.0) as scope:
            for worker in self.workers.values():
                await worker.wait_idle()
        if scope.cancelled_caught or self.pending():
            log.warning(
                "delivery.drain_incomplete",
                pending=self.pending(),
                hint="kept in the state; sent on the next start",
            )
