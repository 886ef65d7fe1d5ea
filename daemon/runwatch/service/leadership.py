"""Leadership: which instance polls which provider, when several share one state.

One lease per enabled provider (``poll:exa``, ``poll:olostep``) and one for the clock-made work that
belongs to no provider (``retention``). :class:`Leadership` takes each lease that is free, renews
the ones it holds every ``lease/3``, and answers at every moment whether this instance leads a lease
and under which :class:`~runwatch.store.interfaces.Fence` (what its writes carry).

**Two clocks, one bound.** The store decides expiry on its own clock (PostgreSQL's); this instance
believes it leads only until *the moment it sent its last successful renewal* plus ``lease``, by its
own clock (``CLOCK_BOOTTIME``: it counts time the process was stopped and the machine suspended). The
store set the lease to run out ``lease`` after it *received* that renewal, which is later; so, with
clocks that tick at the same rate, the old leader has stopped believing before the store can give the
lease to another: there is no moment where two instances believe they lead one lease (the bound is
the drift of the two clocks over one lease: microseconds). A write already on its way when the belief
ends is refused by the store's fence check in the write's own transaction.

**A paused process.** :meth:`Leadership.fence` reads the clock on every call, so a process woken
from ``SIGSTOP`` (or a long pause) past its lease is a standby for the very first thing it does, before
the loop runs again to log ``leader.lost``.

**Failover.** A standby asks for each free lease every ``lease/3``: when a leader dies, its lease runs
out at most ``lease`` after its last renewal and is taken at most ``lease/3`` later (the bound
``lease`` + one renewal interval; ``bench/bench_failover.py`` measures it).

**Metrics.** ``runwatch_leader{provider}`` (1 on the instance polling it), ``runwatch_leader_changes_total
{provider}`` (times this instance became its leader: summed over the instances, the handovers) and
``runwatch_config_mismatch`` (1 while the live instances' config digests differ, see
:func:`config_digest`).

With SQLite the state directory's lock makes this instance the only one: it takes every lease at
once and keeps it, whatever its clock says (a suspended laptop is not a lost lease).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from runwatch import yamlfile
from runwatch.clock import Clock
from runwatch.config import Config
from runwatch.errors import FencedOut, StateError
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.store.interfaces import Fence
from runwatch.store.leases import RETENTION_LEASE, Instances, Leases, poll_lease

log = get_logger(__name__)

#: The config keys that decide what is sent (the digest's input); host-specific keys stay out.
DIGEST_KEYS = ("providers", "channels", "delivery", "silences")


class BootClock:
    """Seconds that go on while the process is stopped or the machine sleeps (``CLOCK_BOOTTIME``;
    monotonic where there is none): a lease's own deadline must count the time a pause took."""

    def now(self) -> float:
        return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def lease_settings(config: Config) -> tuple[str, float]:
    """This instance's name and the lease's length: ``instance`` (default: the host name) and
    ``state.lease`` (default 15 s)."""
    return config.settings.instance, float(config.settings.state.lease)


def config_digest(config: Config, rule_files: Sequence[Path]) -> str:
    """A stable hash of what decides what is sent: the rules (as parsed: comments and layout do not
    count) and the config's providers, channels, delivery and silences. Not ``instance``,
    ``state_dir``, ``metrics_listen``, ``ingest_listen`` or the log settings, which differ between hosts
    by design. Secrets count only as set or not (pydantic dumps them masked), so no digest reveals one.
    """
    dumped = config.settings.model_dump(mode="json", include=set(DIGEST_KEYS))
    rules: list[Any] = []
    for path in rule_files:
        try:
            rules.append(yamlfile.plain(yamlfile.load(path, path.name)))
        except (OSError, yamlfile.FileProblems):
            rules.append(None)
    text = json.dumps({"config": dumped, "rules": rules}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Leadership:
    """The leases this instance holds or wants, kept up by :meth:`run` (or :meth:`step`, driven)."""

    def __init__(
        self,
        leases: Leases,
        instances: Instances,
        *,
        instance: str,
        lease: float,
        providers: Iterable[str],
        metrics: Metrics,
        clock: Clock | None = None,
        digest: str = "",
        polls: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        self.leases = leases
        self.instances = instances
        self.instance = instance
        self.lease = lease
        self.renew_every = lease / 3
        self.metrics = metrics
        self.clock: Clock = clock or BootClock()
        self.digest = digest
        self.polls = polls
        #: Lease name -> (token, the moment by our clock until which we believe we hold it).
        self._held: dict[str, tuple[int, float]] = {}
        self._wanted: list[str] = []
        self._gained: dict[str, anyio.Event] = {}
        #: The digests of the live instances when they last differed (empty: they agree).
        self.mismatch: dict[str, str] = {}
        self.set_providers(providers)

    @property
    def shared(self) -> bool:
        return self.leases.shared

    def set_providers(self, providers: Iterable[str]) -> None:
        """The providers to lead (at start, and after a reload); a dropped one is released at the next
        step. Their ``runwatch_leader`` exists at 0 until held."""
        before = self._wanted
        self._wanted = [*(poll_lease(p) for p in providers), RETENTION_LEASE]
        for name in before:
            if name not in self._wanted and name not in self._held and (p := _provider(name)) is not None:
                with contextlib.suppress(KeyError):
                    self.metrics.leader.remove(p)  # not polled here at all: no "nobody polls it"
        for name in self._wanted:
            if (provider := _provider(name)) is not None and name not in self._held:
                self.metrics.leader.labels(provider).set(0)

    # -- what the daemon asks ---------------------------------------------------------------------------
    def fence(self, name: str) -> Fence | None:
        """The fence of lease ``name`` if this instance leads it now by its own clock, else None."""
        held = self._held.get(name)
        if held is None or self.clock.now() >= held[1]:
            return None
        return Fence(name, self.instance, held[0])

    def held_until(self, name: str) -> float | None:
        """Until when (by this instance's clock) it believes it holds ``name``: its last successful
        renewal's sending plus ``lease``; None when it does not hold it."""
        held = self._held.get(name)
        return None if held is None else held[1]

    def require(self, name: str) -> Fence:
        """The fence to write under; FencedOut when this instance does not lead ``name`` now."""
        fence = self.fence(name)
        if fence is None:
            raise FencedOut(f"this instance ({self.instance}) does not hold the lease {name} now")
        return fence

    async def wait_leading(self, name: str, timeout: float) -> bool:
        """Until this instance leads ``name`` (True) or ``timeout`` seconds passed (False)."""
        if self.fence(name) is not None:
            return True
        event = self._gained.setdefault(name, anyio.Event())
        with anyio.move_on_after(timeout):
            await event.wait()
        return self.fence(name) is not None

    # -- the loop -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the leases every ``lease/3``; a failing store is logged and tried again next round."""
        while True:
            try:
                await self.step()
            except Exception:  # a bug in one round must not end leadership; the deadlines still hold
                log.exception("leader.step_failed")
            await anyio.sleep(self.renew_every)

    async def step(self) -> None:
        """One round: drop what ran out, renew what is held, take what is free, beat the heart."""
        for name in list(self._held):
            await self._keep(name)
        for name in self._wanted:
            if name not in self._held:
                await self._take(name)
        await self._beat()

    async def _keep(self, name: str) -> None:
        token, deadline = self._held[name]
        if name not in self._wanted:
            self._lose(name, "no longer polled (reload)", warn=False)
            await self._call(self.leases.release, name, self.instance, token)
            return
        if self.clock.now() >= deadline:
            self._lose(name, "the lease ran out before it was renewed (this process was paused or cut off)")
            return
        sent = self.clock.now()
        renewed = await self._call(self.leases.renew, name, self.instance, token, self.lease)
        if renewed is None:
            return  # the store did not answer: still ours until the deadline, tried again next round
        if renewed:
            self._held[name] = (token, self._deadline(sent))
        else:
            self._lose(name, "another instance holds the lease now")

    def take_now(self) -> None:
        """Take every lease wanted, at once and blocking: for a store that is not shared (SQLite), whose
        lock already makes this instance the only one, so the daemon polls from its first moment."""
        for name in self._wanted:
            if name not in self._held:
                sent = self.clock.now()
                token = self.leases.acquire(name, self.instance, self.lease)
                if token is not None:
                    self._won(name, token, sent)

    async def _take(self, name: str) -> None:
        sent = self.clock.now()
        token = await self._call(self.leases.acquire, name, self.instance, self.lease)
        if isinstance(token, int) and not isinstance(token, bool):
            self._won(name, token, sent)

    def _won(self, name: str, token: int, sent: float) -> None:
        self._held[name] = (token, self._deadline(sent))
        if (provider := _provider(name)) is not None:
            self.metrics.leader.labels(provider).set(1)
            self.metrics.leader_changes.labels(provider).inc()
        log.info("leader.acquired", lease=name, instance=self.instance, token=token)
        if (event := self._gained.pop(name, None)) is not None:
            event.set()

    def _deadline(self, sent: float) -> float:
        return sent + self.lease if self.shared else float("inf")

    def _lose(self, name: str, reason: str, *, warn: bool = True) -> None:
        token, _ = self._held.pop(name)
        if (provider := _provider(name)) is not None:
            self.metrics.leader.labels(provider).set(0)
            if name not in self._wanted:
                self.metrics.leader.remove(provider)  # not polled here at all: no "nobody polls it"
        (log.warning if warn else log.info)(
            "leader.lost", lease=name, instance=self.instance, token=token, reason=reason
        )

    async def _call(self, func: Callable[..., object], *args: object) -> object | None:
        """A store call in a worker thread (PostgreSQL blocks); its failure is a log line and None."""
        try:
            out = await anyio.to_thread.run_sync(func, *args)
        except StateError as exc:
            self.metrics.state_failed(exc)
            log.warning("leader.store_failed", call=getattr(func, "__name__", "?"), error=str(exc))
            return None
        self.metrics.state_answered()  # asked every lease/3: what ends runwatch_state_up 0 when idle
        return out

    async def _beat(self) -> None:
        """Say this instance lives, and compare the live instances' config digests."""
        await self._call(self.instances.heartbeat, self.instance, self.digest, dict(self.polls()))
        found = await self._call(self.instances.instances)
        if not isinstance(found, list):
            return
        live = {i.name: i.digest for i in found if i.age < self.lease}
        live[self.instance] = self.digest
        differ = live if len(set(live.values())) > 1 else {}
        if differ and differ != self.mismatch:
            log.warning(
                "config.mismatch",
                instances=",".join(f"{n}={d}" for n, d in sorted(differ.items())),
                hint="instances with different rules or channels decide differently; deploy one config",
            )
        elif not differ and self.mismatch:
            log.info("config.mismatch_ended", digest=self.digest)
        self.mismatch = differ
        self.metrics.config_mismatch.set(1 if differ else 0)

    async def release_all(self) -> None:
        """At shutdown: give every lease up, so a standby takes over at once instead of after ``lease``."""
        for name in list(self._held):
            token, _ = self._held[name]
            self._held.pop(name)
            if (provider := _provider(name)) is not None:
                self.metrics.leader.labels(provider).set(0)
            await self._call(self.leases.release, name, self.instance, token)
            log.info("leader.released", lease=name, instance=self.instance, token=token)


def _provider(lease: str) -> str | None:
    """The provider a poll lease is for (None for the others)."""
    kind, _, provider = lease.partition(":")
    return provider if kind == "poll" and provider else None
