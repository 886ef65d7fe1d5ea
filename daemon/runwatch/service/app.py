"""The daemon's lifecycle in one place: start, poll loops, reload on SIGHUP, drain and stop on SIGTERM.

Everything else gets a cancel scope or an event; only this module knows about signals and systemd.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from runwatch.clock import Clock, SystemClock
from runwatch.config import Config, load_config
from runwatch.delivery import Deliverer
from runwatch.errors import FencedOut, StateError
from runwatch.httpserver import Listening, serve
from runwatch.log import get_logger, set_level
from runwatch.metrics import Metrics, OutboxCollector
from runwatch.model import Alert, ChangeKind
from runwatch.pipeline.chain import Batch, Pipeline
from runwatch.pipeline.detect import Detect
from runwatch.pipeline.lifecycle import Lifecycle
from runwatch.pipeline.match import Match, alerts_for
from runwatch.pipeline.monitors import Monitors, MonitorWatch
from runwatch.pipeline.record import Record
from runwatch.pipeline.silences import Muter, release_ended
from runwatch.pipeline.source_health import SourceHealth, outage_change
from runwatch.pipeline.stuck import stuck_runs
from runwatch.redact import register
from runwatch.service import reload as reconfigure
from runwatch.service import systemd
from runwatch.service.assemble import channel_policies, check, state_location
from runwatch.service.coverage import CoverageKeeper
from runwatch.service.endpoints import Health, make_app
from runwatch.service.ingest import HookConfig, Ingest, PushedReads, serving
from runwatch.service.leadership import Leadership, config_digest, lease_settings
from runwatch.service.live_logs import LiveLogs
from runwatch.service.reload import Plan
from runwatch.service.reload_outcome import ReloadOutcome
from runwatch.service.retention import Retention
from runwatch.sources.base import MonitorBatch, PollReport, Source
from runwatch.sources.registry import PROVIDERS
from runwatch.sources.settings import ProviderSettings
from runwatch.store import Fence, Notification, open_leases, open_state
from runwatch.store.alert_state import OpenAlert
from runwatch.store.leases import RETENTION_LEASE, LeaseStore, poll_lease
from runwatch.yamlfile import FileProblems

log = get_logger(__name__)

E = TypeVar("E", bound=BaseException)

#: How often (real seconds) the lifecycle looks for repeats that are due.
LIFECYCLE_TICK = 1.0
#: With several instances, how often a provider's leader looks for pushes another instance took.
SHARED_HINTS_EVERY = 1.0


@dataclass
class Daemon:
    """One running runwatch: state, sources, rules, delivery and the metrics endpoint."""

    config: Config
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = field(default_factory=SystemClock)
    #: Extra keyword arguments for each source's HTTP client (tests shorten the backoff).
    client_options: Mapping[str, Any] = field(default_factory=dict)
    #: Where the leases live (None: the SQLite state's own, always this instance's); and the clock a
    #: lease's own deadline is kept by (None: CLOCK_BOOTTIME). Tests inject both.
    leases: LeaseStore | None = None
    lease_clock: Clock | None = None

    def __post_init__(self) -> None:
        self.ruleset, self.channels = check(self.config)
        #: What each channel was built from (a reload rebuilds those whose inputs changed).
        self.channel_inputs = reconfigure.channel_inputs(self.config)
        self.metrics.rules_loaded.set(len(self.ruleset))
        self.metrics.last_reload_success.set(self.clock.now())
        try:
            self.store = open_state(state_location(self.config))
        except BaseException:
            for ch in self.channels.values():
                ch.close()
            raise
        now = str(self.clock.now())
        first = self.store.first_meta("first_start", now)
        if first == now:
            log.info("state.created", path=self.store.where)
        self.not_before = float(first) - self.config.settings.first_start_lookback
        horizon = self.store.get_meta("retention_horizon")
        if horizon is not None:
            self.not_before = max(self.not_before, float(horizon))
        self.muter = Muter(self.config.settings.silences, self.store.silences)
        self.deliverer = Deliverer(
            self.store.outbox,
            self.store.sends,
            self.channels,
            channel_policies(self.config),
            self.metrics,
            self.clock,
            muter=self.muter,
        )
        self.outbox_collector = OutboxCollector(self.store.outbox, self.channels, self.clock)
        self.metrics.registry.register(self.outbox_collector)
        self.retention = Retention(self.store, self.config.settings, self.clock)
        self.detect = Detect(self.store, self.metrics)
        self.lifecycle = Lifecycle(
            self.store.alerts, lambda: self.ruleset, self.metrics, sent=self.store.outbox
        )
        self.record = Record(self.store, self.deliverer.wake, self._fence)
        self.match = Match(lambda: self.ruleset, self.metrics)
        slack = {n: s.poll_interval for n, s in self.config.enabled_providers().items()}
        self.monitors = Monitors(MonitorWatch(self.store.monitors, slack), self.metrics)
        self.pipeline = Pipeline(
            [self.detect, self.monitors, self.match, self.lifecycle, self.record], self.clock
        )
        self.source_health = SourceHealth()
        self.sources: dict[str, Source] = {}
        enabled = self.config.enabled_providers()
        for name, spec in PROVIDERS.items():
            if name not in enabled:
                log.info("provider.off", provider=name, reason="no API key configured")
                continue
            settings = enabled[name]
            assert settings.api_key is not None
            register(settings.api_key.get_secret_value())
            self._warn_interval(name, settings, spec.real_hosts)
            self.sources[name] = spec.source(settings, self.metrics, **self.client_options)
        self.pollers = reconfigure.Pollers(self.sources, enabled, self.metrics, self.client_options)
        # Push: verified pushes wake a provider's loop to read what they name (hints in the state).
        self.pushed = PushedReads(self.store.hints)
        self.store.hints.on_read = lambda h, at: self.metrics.push_to_read.labels(h.provider).observe(
            max(0.0, at - h.received_at)
        )
        hooks = HookConfig.build(enabled, self.config.settings.ingest_trusted_proxies)
        on = self.config.settings.ingest_listen is not None
        self.ingest = (
            Ingest(self.store.hints, self.metrics, self.clock, self._push_came, hooks) if on else None
        )
        #: Where the push listener listens once :meth:`running` (None: no push).
        self.ingest_http: Listening | None = None
        #: Each source's coverage in the state, for a restart's catch-up through the events API.
        self.coverage = CoverageKeeper(self.store)
        # Live logs: the streams of Olostep runs in flight, fed through the same pipeline as a poll.
        self.live = LiveLogs(
            settings=lambda: self.pollers.settings.get("olostep"), runs=self.store.runs,
            hints=self.store.hints, feed=self.pipeline, wake=self._push_came,
            leads=lambda p: (f := self.leadership.fence(poll_lease(p))) is not None
            and self._synced.get(p) == f.token,
            not_before=lambda: self.not_before, metrics=self.metrics, clock=self.clock,
            client_options=self.client_options,
        )  # fmt: skip
        self.health = Health(self.clock, {n: s.poll_interval for n, s in enabled.items()})
        self.metrics.prime(self.sources, self.channels, (r.name for r in self.ruleset))
        self.polls_done: dict[str, int] = dict.fromkeys(self.sources, 0)
        self._poll_done = anyio.Event()
        #: Providers whose poll loop waits as a standby now (no cycle in flight), how many rounds each
        #: loop has waited as one (a round is a poll interval, or until it leads), and their event.
        self.standing_by: set[str] = set()
        self.standby_rounds: Counter[str] = Counter()
        self._stood_by = anyio.Event()
        self._lead(enabled)

    # -- leadership (several instances on one state) ----------------------------------------------------
    def _lead(self, enabled: Mapping[str, ProviderSettings]) -> None:
        """Which providers this instance polls: those whose lease it holds (:mod:`.leadership`). With
        SQLite it takes them all at once, as the only instance; with ``state.url`` the leases are in
        that database, shared by every instance on it. The poll loops, the clock-made changes and
        retention ask :attr:`leadership` before they work, delivery never does (every instance sends)."""
        instance, lease = lease_settings(self.config)
        self._own_leases = self.leases is None
        leases = self.leases or open_leases(state_location(self.config), self.clock)
        digest = config_digest(self.config, self.ruleset.files)
        self.leadership = Leadership(
            leases, leases, instance=instance, lease=lease, providers=enabled, metrics=self.metrics,
            clock=self.lease_clock, digest=digest, polls=lambda: self.health.last_ok,
        )  # fmt: skip
        self.health.leads = lambda provider: self.leadership.fence(poll_lease(provider)) is not None
        self.health.state = lambda: self.metrics.state_problem
        #: provider -> the lease token its memory was last read from the store under.
        self._synced: dict[str, int] = {}
        if not leases.shared:
            self.leadership.take_now()

    def _fence(self, provider: str) -> Fence | None:
        """What a write about ``provider`` is made under; FencedOut when this instance does not lead it
        (a write about no provider, ``""``, belongs to the ``retention`` lease). SQLite: whatever it
        holds, or None (its only writer needs no fence, and a provider turned off keeps its alerts)."""
        name = poll_lease(provider) if provider else RETENTION_LEASE
        return self.leadership.require(name) if self.leadership.shared else self.leadership.fence(name)

    def _led(self) -> set[str] | None:
        """The providers this instance leads now (``""`` too while it holds ``retention``); None: all of
        them, whatever the state holds (SQLite: the only instance)."""
        if not self.leadership.shared:
            return None
        led = {p for p in self.sources if self.leadership.fence(poll_lease(p)) is not None}
        return led | ({""} if self.leadership.fence(RETENTION_LEASE) is not None else set())

    def _owns(self, alert: OpenAlert, led: set[str] | None) -> bool:
        return led is None or alert.group.get("provider", "") in led

    def resync(self, provider: str) -> None:
        """This instance has just become ``provider``'s leader: read its state afresh before polling.

        While another instance led it, that one polled and recorded runs, monitors, open alerts and
        catch-ups (and may have forgotten old runs) that this instance's memory does not have: polling
        from the stale copy would report again what was already reported, or act on alerts already
        resolved. With SQLite nobody else writes, and memory is never behind: nothing to do.
        """
        if not self.leadership.shared:
            return
        self.store.runs.reload(provider)
        self.store.alerts.reload(provider)
        self.store.monitors.reload(provider)
        self.store.hints.reload_provider(provider)  # pushes a standby took in meanwhile
        if self.store.get_meta(f"baseline_done:{provider}") == "1":
            self.detect.baselined.add(provider)
        self.source_health.outages.pop(provider, None)
        horizon = self.store.get_meta("retention_horizon")
        if horizon is not None:
            self.not_before = max(self.not_before, float(horizon))
        log.info("leader.resynced", provider=provider, runs_unfinished=len(self.store.runs.runs))

    @staticmethod
    def _warn_interval(name: str, s: ProviderSettings, real_hosts: tuple[str, ...]) -> None:
        if s.poll_interval < 30 and any(h in s.base_url for h in real_hosts):
            log.warning(
                "poll_interval.short",
                provider=name,
                poll_interval=s.poll_interval,
                hint="below 30s against the real API wastes quota and may be rate limited",
            )

    # -- rules --------------------------------------------------------------------------------------
    def reload(self, outcome: ReloadOutcome | None = None) -> bool:
        """Re-read the config file and the rule files (SIGHUP, ``runwatch reload``), and apply all of it.

        Validated as ``runwatch check`` does (channels built, rules against the new channel set) before
        anything changes; then rules, silences, channels, delivery and providers are applied
        (:mod:`runwatch.service.reload`). Only the state and the metrics address need a restart (a
        warning names them). A broken file keeps everything that runs, and says why; ``outcome``, when
        given, gets the same (``runwatch reload`` waits for it: :mod:`runwatch.service.reload_outcome`).
        """
        try:
            config = load_config(self.config.path) if self.config.path is not None else self.config
            ruleset, built = check(config)
        except FileProblems as exc:
            self.metrics.reloads.labels("failure").inc()
            self.metrics.last_reload_ok.set(0)
            for p in exc.problems:
                log.error("reload.rejected", problem=str(p))
            log.error("reload.failed", kept_rules=len(self.ruleset), kept_channels=len(self.channels))
            if outcome is not None:
                outcome.refused(exc.problems)
            return False
        plan = reconfigure.plan(self.config, self.channel_inputs, self.channels, config, ruleset, built)
        apply(self, plan)
        if outcome is not None:
            outcome.taken(len(ruleset), plan.needs_restart)
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_ok.set(1)
        self.metrics.last_reload_success.set(self.clock.now())
        self.metrics.rules_loaded.set(len(ruleset))
        log.info(
            "reload.ok",
            rules=len(ruleset),
            files=len(ruleset.files),
            channels=len(self.channels),
            providers=",".join(self.sources),
        )
        return True

    # -- polling ------------------------------------------------------------------------------------
    async def poll_once(self, name: str) -> bool:
        """One poll cycle of one provider; True when it finished without an API error."""
        started = self.clock.now()
        settings = self.pollers.settings[name]
        self.pushed.expire(name, max(settings.idle_poll_interval, 2 * settings.poll_interval), started)
        self.coverage.before(name, self.sources[name])
        with self.metrics.poll_duration.labels(name).time():
            report = await self._read(name, started, self.pushed.urgent(name))
        if (fence := self.leadership.fence(poll_lease(name))) is not None:
            self.coverage.after(name, self.sources[name], fence)
        ok = not report.errors
        self._source_outcome(name, report)
        self.metrics.polls.labels(name, "ok" if ok else "error").inc()
        self.metrics.provider_up.labels(name).set(1 if ok else 0)
        for err in report.errors[:5]:
            log.warning(
                "poll.error",
                provider=name,
                reason=err.reason,
                status=err.status,
                request_id=err.request_id,
                error=str(err),
            )
        if any(e.reason == "auth" for e in report.errors):
            log.error(
                "provider.auth_failed",
                provider=name,
                hint="the API key was refused (401/403); check it, other providers go on",
            )
        if ok:
            self.detect.provider_settled(name, fence=self._fence(name))
            self.metrics.last_success.labels(name).set(self.clock.now())
            self.health.polled(name)
        self._update_run_gauges()
        log.debug(
            "poll.done",
            provider=name,
            ok=ok,
            monitors=report.monitors,
            runs=report.snapshots,
            errors=len(report.errors),
            seconds=round(self.clock.now() - started, 3),
        )
        self.polls_done[name] += 1
        self._poll_done.set()
        self._poll_done = anyio.Event()
        return ok

    async def _read(self, name: str, started: float, read_now: list[str], only: bool = False) -> PollReport:
        """Run one cycle of the source through the pipeline (and its listing, when it read one)."""
        async with self.sources[name].poll(
            self.store.runs,
            now=started,
            not_before=self.not_before,
            watch_due=max(self._graces(), default=0.0),
            read_now=read_now,
            only=only,
        ) as (batches, report):
            async for batch in batches:
                await self.pipeline(batch)
        if report.listing is not None:
            self._through(self.monitors.listing(report.listing, self.clock.now()))
        return report

    async def read_pushed(self, name: str) -> int:
        """Read the monitors pushes named that no read has tried yet, beside a regular cycle or between
        two (a second of the request budget at most; the rest next time). Returns how many."""
        settings = self.pollers.settings[name]
        fresh = self.pushed.fresh(name, max(settings.concurrency, int(settings.max_requests_per_second)))
        if not fresh:
            return 0
        report = await self._read(name, self.clock.now(), fresh, only=True)
        for err in report.errors[:5]:
            log.warning(
                "push.read_failed", provider=name, reason=err.reason, status=err.status, error=str(err)
            )
        self._update_run_gauges()
        return report.monitors

    def _push_came(self, name: str) -> None:
        """A push was recorded: read it now, beside a cycle in progress or by waking the loop."""
        self.pushed.arrived(name)
        self.pollers.wake(name)

    async def wait_polls(self, name: str, count: int) -> None:
        """Tests and the demo: wait until ``name`` has finished ``count`` poll cycles in all."""
        while self.polls_done[name] < count:
            await self._poll_done.wait()

    async def wait_standing_by(self, name: str, rounds: int = 0) -> None:
        """Tests: wait until ``name``'s poll loop stands by (its cycle in flight, if any, ended), and
        has begun ``rounds`` more rounds as a standby from now (each a poll interval it could poll in)."""
        target = self.standby_rounds[name] + rounds
        while name not in self.standing_by or self.standby_rounds[name] < target:
            await self._stood_by.wait()

    def _update_run_gauges(self) -> None:
        self.metrics.runs_tracked.clear()
        for (provider, status), n in self.store.runs.status_counts().items():
            self.metrics.runs_tracked.labels(provider, status).set(n)
        self.metrics.alerts_firing.set(self.store.alerts.firing())

    async def _poll_loop(self, name: str) -> None:
        lease = poll_lease(name)
        began: float | None = None  # when the last regular cycle began (anyio time)
        while True:
            settings = self.pollers.settings.get(name)
            interval = settings.poll_interval if settings else 1.0
            fence = self.leadership.fence(lease)
            if fence is None:  # standby: until this instance leads it (or a reload changes it)
                self.standing_by.add(name)
                self.standby_rounds[name] += 1
                self._stood_by.set()
                self._stood_by = anyio.Event()
                try:
                    await self.leadership.wait_leading(lease, interval)
                finally:
                    self.standing_by.discard(name)
                began = None  # a new leader polls at once
                if not await self.pollers.pause(name, -math.inf):  # a reload may stop it here
                    return
                continue
            now = anyio.current_time()
            regular = began is None or now - began >= interval
            if regular:
                began = now
            await self.cycle(name, fence, regular=regular)
            if self.pushed.has_fresh(name):
                self.pollers.wake(name)  # more pushes came, or a burst is read in slices
            assert began is not None
            if not await self.pollers.pause(name, began):  # a reload may rebuild or stop it here
                return

    async def cycle(self, name: str, fence: Fence, *, regular: bool = True) -> None:
        """One poll cycle as the leader of ``name`` under ``fence`` (memory read afresh first when the
        lease is new to it), or only the pushed reads when not ``regular``. A cycle refused by the
        fence (the lease was lost mid-cycle) or by a database that is away wrote nothing and is one log
        line; the next cycle tries again. Either may come out of the source's task group wrapped in an
        exception group."""
        try:
            if self._synced.get(name) != fence.token:
                self.resync(name)
                self._synced[name] = fence.token
            if regular:  # and the pushes that come meanwhile are read beside it
                await self.pushed.beside(name, lambda: self.poll_once(name), lambda: self.read_pushed(name))
            else:  # woken by a push between two regular cycles
                await self.read_pushed(name)
        except Exception as exc:  # a bug in one cycle must not end the loop; it shows in logs and metrics
            if (fenced := _leaf(exc, FencedOut)) is not None:
                self.metrics.state_failed(fenced)
                log.warning("poll.fenced", provider=name, error=str(fenced))
            elif (failed := _leaf(exc, StateError)) is not None:
                self.metrics.state_failed(failed)
                self.metrics.polls.labels(name, "error").inc()
                log.warning("poll.state_failed", provider=name, error=str(failed))
            else:
                self.metrics.polls.labels(name, "crash").inc()
                log.exception("poll.crashed", provider=name)

    def _source_outcome(self, name: str, report: PollReport) -> None:
        """A cycle that reached no monitor (or had its key refused) is an outage of the provider; the
        first cycle that reaches them again ends it, closing its source.error alerts."""
        down = bool(report.errors) and (
            report.monitors == 0 or any(e.reason == "auth" for e in report.errors)
        )
        error = f"{report.errors[0].reason}: {report.errors[0]}" if down else None
        now = self.clock.now()
        ended = self.source_health.polled(name, error, now)
        if ended is None:
            return
        log.info("provider.recovered", provider=name, down_for=round(now - ended.since, 1))
        decisions, updates = self.lifecycle.end_outage(outage_change(name, ended, now, resolved=True))
        notes = [Notification(a) for d in decisions for a in alerts_for(d)]
        if updates:
            self.store.record(name, [], notes, now, alert_updates=updates, fence=self._fence(name))
            if notes:
                self.deliverer.wake({n.channel for n in notes})

    def _stuck_thresholds(self) -> list[float]:
        """The stuck_after of the rules that name run.stuck (none: nothing to look for)."""
        return [
            r.stuck_after
            for r in self.ruleset
            if r.matcher.kinds is not None and ChangeKind.RUN_STUCK.value in r.matcher.kinds
        ]

    def _graces(self) -> list[float]:
        """The grace of the rules that name monitor.missed_run."""
        return [
            r.grace
            for r in self.ruleset
            if r.matcher.kinds is not None and ChangeKind.MONITOR_MISSED_RUN.value in r.matcher.kinds
        ]

    def _through(self, batch: Batch) -> None:
        """A batch the daemon made itself (a listing, the clock) through Match, Lifecycle, Record."""
        for stage in (self.match, self.lifecycle, self.record):
            stage(batch)

    def lifecycle_tick(self) -> int:
        """Time-driven decisions: source.error changes of providers failing long enough, runs stuck
        and scheduled runs missed, repeats that are due (and stale pending alerts); returns how many
        notifications were queued."""
        now = self.clock.now()
        led = self._led()  # each instance decides only for what it leads (SQLite: everything)
        outages = [
            c
            for c in self.source_health.changes(now, (r.for_ for r in self.ruleset))
            if led is None or c.provider in led
        ]
        for change in outages:
            self._through(Batch(MonitorBatch(change.provider, "", []), now, changes=[change]))
        runs = self.store.runs.runs
        if led is not None:
            runs = {k: r for k, r in runs.items() if k[0] in led}
        for found in stuck_runs(runs, now, self._stuck_thresholds()):
            ch = found.change
            ch = dataclasses.replace(ch, monitor=self.store.monitors.raw(ch.provider, ch.monitor_id))
            batch = Batch(MonitorBatch(ch.provider, "", []), now, changes=[ch])
            batch.stuck = [found.mark]
            self._through(batch)  # the thresholds crossed and their notifications in one transaction
        missed, records = self.monitors.watch.missed(now, self._graces())
        by_monitor = {(r.provider, r.monitor_id): r for r in records if led is None or r.provider in led}
        for change in (c for c in missed if led is None or c.provider in led):
            batch = Batch(MonitorBatch(change.provider, "", []), now, changes=[change])
            rec = by_monitor.pop((change.provider, change.monitor_id), None)
            batch.monitor_updates = [rec] if rec is not None else []
            self._through(batch)  # the decision and its notifications in one transaction
        for provider in {r.provider for r in by_monitor.values()}:
            updates_of = [r for r in by_monitor.values() if r.provider == provider]
            self.store.record(provider, [], [], now, monitor_updates=updates_of, fence=self._fence(provider))
        owned = [a for a in self.store.alerts.open.values() if self._owns(a, led)]
        released: list[Alert] = []
        for provider in sorted({a.group.get("provider", "") for a in owned}):  # each under its lease
            mine = [a for a in owned if a.group.get("provider", "") == provider]
            released += release_ended(mine, self.store.outbox, self.muter, now, fence=self._fence(provider))
        for alert in released:
            self.metrics.unsilenced.labels(alert.channel).inc()
            log.info("notify.unsilenced", channel=alert.channel, id=alert.id, rule=alert.rule)
        if released:
            self.deliverer.wake({a.channel for a in released})
        queued = 0
        for provider in [""] if led is None else sorted(led):  # a write per lease, under its fence
            notes, updates = self.lifecycle.tick(self.clock.now(), None if led is None else {provider})
            if not updates:
                continue
            new = self.store.record(
                provider, [], notes, self.clock.now(), alert_updates=updates, fence=self._fence(provider)
            )
            if new:
                self.deliverer.wake({n.channel for n in notes})
            queued += new
        self.metrics.alerts_firing.set(self.store.alerts.firing())
        return queued

    async def _lifecycle_loop(self) -> None:
        while True:
            try:
                self.lifecycle_tick()
            except FencedOut as exc:  # a lease ran out between the tick's look and its write
                self.metrics.state_failed(exc)
                log.warning("lifecycle.fenced", error=str(exc))
            except StateError as exc:  # the database is away; the next tick tries again
                self.metrics.state_failed(exc)
                log.warning("lifecycle.state_failed", error=str(exc))
            except Exception:  # housekeeping must not stop the daemon; the next tick tries again
                log.exception("lifecycle.tick_failed")
            await anyio.sleep(LIFECYCLE_TICK)

    def take_shared_hints(self) -> list[str]:
        """With several instances a push may reach a standby: it records the hint in the shared state,
        where this instance's memory of waiting hints does not see it. The leader of each provider
        reads the waiting hints afresh and, when one is new to it, reads what it names at once (as if
        the push had come here). Returns the providers woken."""
        woken: list[str] = []
        for name in list(self.sources):
            if self.leadership.fence(poll_lease(name)) is None:
                continue  # the leader of that provider takes them
            known = {h.event_id for h in self.store.hints.pending(name)}
            try:
                self.store.hints.reload_provider(name)
            except StateError as exc:  # the database is away: the next turn tries again
                self.metrics.state_failed(exc)
                continue
            if {h.event_id for h in self.store.hints.pending(name)} - known:
                self._push_came(name)
                woken.append(name)
        return woken

    async def _shared_hints_loop(self) -> None:
        while True:
            await anyio.sleep(SHARED_HINTS_EVERY)
            try:
                self.take_shared_hints()
            except Exception:  # housekeeping: never stop the daemon for it
                log.exception("push.shared_hints_failed")

    async def _retention_loop(self) -> None:
        while True:
            try:
                if (fence := self.leadership.fence(RETENTION_LEASE)) is not None:  # one instance does it
                    horizon = self.retention.run_once(fence)
                    if horizon is not None:
                        self.not_before = max(self.not_before, horizon)
            except Exception:  # retention is housekeeping: log it, never stop the daemon for it
                log.exception("retention.failed")
            await anyio.sleep(self.retention.interval)

    # -- lifecycle ----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Listening]:
        """Serve metrics, poll and deliver while the block runs; then drain deliveries and stop."""
        listen = self.config.settings.metrics_listen
        try:
            async with (
                serve(make_app(self.metrics, self.health), listen, name="metrics") as http,
                serving(self.ingest, self.config.settings.ingest_listen) as self.ingest_http,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(self.deliverer.run)
                tg.start_soon(self.leadership.run)
                tg.start_soon(self._retention_loop)
                tg.start_soon(self._lifecycle_loop)
                if self.leadership.shared:  # pushes other instances took
                    tg.start_soon(self._shared_hints_loop)
                tg.start_soon(self.live.run)
                if (beat := systemd.watchdog_interval()) is not None:
                    tg.start_soon(systemd.keep_watchdog, beat)
                self.pollers.start(tg, self._poll_loop)
                log.info(
                    "runwatch.started",
                    metrics=f"{http.url}/metrics",
                    ingest=self.ingest_http and f"{self.ingest_http.url}/hooks/",
                    providers=",".join(self.sources),
                    rules=len(self.ruleset),
                    channels=",".join(self.channels),
                )
                try:
                    yield http
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.deliverer.drain(self.config.settings.delivery.shutdown_timeout)
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.pollers.aclose()
                await self.leadership.release_all()  # a standby takes over now, not after a lease
            if self._own_leases:
                self.leadership.leases.close()
            self.store.close()
            log.info("runwatch.stopped")

    async def serve_until_signalled(
        self, *, task_status: TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with self.running() as http:
                systemd.notify("READY=1", f"STATUS=polling {', '.join(self.sources) or 'nothing'}")
                task_status.started(http)
                async for sig in signals:
                    if sig == signal.SIGHUP:
                        outcome = ReloadOutcome(began=systemd.reloading())
                        self.reload(outcome)
                        outcome.write(self.config.state_dir)
                        systemd.notify("READY=1")
                        continue
                    log.info("runwatch.stopping", signal=signal.Signals(sig).name)
                    systemd.notify("STOPPING=1")
                    break


def _leaf(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` if it is a ``kind``, or the first ``kind`` inside it when it is an exception group whose
    other leaves are only what that failure caused (a stream the source could no longer hand a batch
    to); None otherwise (anything else is a crash, shown whole)."""
    if isinstance(exc, kind):
        return exc
    if not isinstance(exc, BaseExceptionGroup):
        return None
    found, rest = exc.split(kind)
    if found is None or (rest is not None and rest.split(anyio.BrokenResourceError)[1] is not None):
        return None
    leaf: BaseException = found
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, kind) else None


def apply(daemon: Daemon, p: Plan) -> None:
    """Hand each part of a validated reload to what owns it (see the module docstring)."""
    daemon.ruleset = p.ruleset
    daemon.muter.configured = list(p.config.settings.silences)
    daemon.config = p.config
    daemon.channels = dict(p.channels)
    daemon.channel_inputs = p.inputs
    daemon.deliverer.reconfigure(p.channels, p.policies, set(p.rebuilt))
    daemon.outbox_collector.channels = list(p.channels)
    daemon.retention.keep = p.config.settings.delivery.keep
    set_level(p.config.settings.log_level)
    enabled = p.config.enabled_providers()
    for settings in enabled.values():
        assert settings.api_key is not None
        register(settings.api_key.get_secret_value())
    started, stopped, rebuilt = daemon.pollers.update(enabled)
    daemon.leadership.set_providers(enabled)
    daemon.leadership.digest = config_digest(p.config, p.ruleset.files)
    if not daemon.leadership.shared:
        daemon.leadership.take_now()
    for name in [*started, *rebuilt]:
        daemon.health.intervals[name] = enabled[name].poll_interval
        daemon.polls_done.setdefault(name, 0)
        daemon._warn_interval(name, enabled[name], PROVIDERS[name].real_hosts)
    for name in stopped:
        daemon.health.intervals.pop(name, None)
        daemon.health.last_ok.pop(name, None)
    daemon.metrics.prime(started, p.added, (r.name for r in p.ruleset))
    if daemon.ingest is not None:
        daemon.ingest.config = HookConfig.build(enabled, p.config.settings.ingest_trusted_proxies)
    if p.needs_restart:
        log.warning(
            "reload.needs_restart",
            sections=",".join(p.needs_restart),
            hint="these changed in the config; they take effect when runwatch restarts",
        )
    changed = {
        "channels_added": p.added, "channels_removed": p.removed, "channels_rebuilt": p.rebuilt,
        "providers_started": started, "providers_stopped": stopped, "providers_rebuilt": rebuilt,
    }  # fmt: skip
    if any(changed.values()):
        log.info("reload.applied", **{k: ",".join(v) for k, v in changed.items() if v})
