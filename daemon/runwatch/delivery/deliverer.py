"""All channel workers of one daemon: start them, wake them, drain them on shutdown."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import anyio
from anyio.abc import TaskGroup

from runwatch.clock import Clock
from runwatch.delivery.channel import Channel
from runwatch.delivery.policy import ChannelPolicy
from runwatch.delivery.worker import ChannelWorker
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.pipeline.silences import Muter
from runwatch.store.interfaces import Outbox, SendLog

log = get_logger(__name__)


class Deliverer:
    """One :class:`ChannelWorker` per configured channel, over one outbox (and its channels' send
    times, for their ``rate``)."""

    def __init__(
        self,
        outbox: Outbox,
        sends: SendLog,
        channels: Mapping[str, Channel],
        policies: Mapping[str, ChannelPolicy],
        metrics: Metrics,
        clock: Clock,
        muter: Muter | None = None,
    ) -> None:
        self.outbox = outbox
        self.sends = sends
        self.channels = dict(channels)
        self.metrics = metrics
        self.clock = clock
        self.muter = muter
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.workers = {
            name: self._worker(ch, policies.get(name, ChannelPolicy())) for name, ch in self.channels.items()
        }
        #: While :meth:`run` runs: where a reload starts the workers of added or rebuilt channels.
        self._tg: TaskGroup | None = None
        #: Workers a reload stopped whose batch in flight has not finished yet, by channel.
        self._leaving: dict[str, ChannelWorker] = {}
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

    def _worker(self, channel: Channel, policy: ChannelPolicy) -> ChannelWorker:
        return ChannelWorker(
            channel, policy, self.outbox, self.metrics, self.clock, self.owner, self.sends, muter=self.muter
        )

    def reconfigure(
        self, channels: Mapping[str, Channel], policies: Mapping[str, ChannelPolicy], rebuilt: set[str]
    ) -> None:
        """Take a reloaded channel set: ``channels`` is all of it (unchanged ones the same objects).

        A removed channel's worker stops after its batch in flight; its pending rows stay in the
        outbox (sent if the channel comes back). A channel in ``rebuilt`` (new URL, secret or policy)
        gets a new worker once the old one has finished its batch: never two senders on one channel.
        """
        counts = self.outbox.counts()
        for name in [n for n in self.workers if n not in channels]:
            self._retire(self.workers.pop(name), None)
            self.channels.pop(name, None)
            log.warning(
                "reload.channel_removed",
                channel=name,
                pending=counts.get((name, "pending"), 0),
                hint="pending notifications stay in the state; configure the channel again to send them",
            )
        for name, channel in channels.items():
            if name in self.workers and name not in rebuilt:
                continue
            worker = self._worker(channel, policies.get(name, ChannelPolicy()))
            old = self.workers.get(name)
            self.workers[name] = worker
            self.channels[name] = channel
            self.metrics.circuit_open.labels(name).set(0)
            if old is not None:
                self._retire(old, worker)
            elif (leaving := self._leaving.get(name)) is not None and self._tg is not None:
                self._tg.start_soon(self._follow, leaving, worker)  # removed, and back before it stopped
            elif self._tg is not None:
                self._tg.start_soon(worker.run)

    def _retire(self, old: ChannelWorker, successor: ChannelWorker | None) -> None:
        if self._tg is None:  # not running yet: nothing in flight
            old.finished.set()
            old.channel.close()
            return
        old.stop()
        self._leaving[old.name] = old
        self._tg.start_soon(self._handover, old, successor)

    async def _handover(self, old: ChannelWorker, successor: ChannelWorker | None) -> None:
        await old.finished.wait()
        if self._leaving.get(old.name) is old:
            del self._leaving[old.name]
        old.channel.close()
        log.info("reload.channel_stopped", channel=old.name, restarting=successor is not None)
        if successor is not None:
            await successor.run()  # returns at once when a later reload stopped it already

    @staticmethod
    async def _follow(old: ChannelWorker, successor: ChannelWorker) -> None:
        await old.finished.wait()
        await successor.run()

    def wake(self, channels: set[str] | None = None) -> None:
        for name, worker in self.workers.items():
            if channels is None or name in channels:
                worker.wake()

    async def run(self) -> None:
        """Run every channel's worker until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for worker in self.workers.values():
                    tg.start_soon(worker.run)
        finally:
            self._tg = None
            for ch in [*self.channels.values(), *(w.channel for w in self._leaving.values())]:
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
