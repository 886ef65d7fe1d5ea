"""A reload applies the whole re-read config to the running daemon, or nothing of it.

The daemon validates first (channels built and rules checked exactly as ``runwatch check`` does, rules
against the new channel set); only a config that passed comes here. :func:`plan` works out what
changed; :func:`apply` hands each part to the piece that owns it: rules and silences swap at once,
channels go to the :class:`~runwatch.delivery.Deliverer` (a worker stops only after its batch in
flight), providers to :class:`Pollers` (a source is rebuilt only between two poll cycles). The run
state and the outbox live in the store, so nothing decided is lost by any of it. Only the state
directory, ``state:`` and ``metrics_listen`` still need a restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from runwatch.config import Config
from runwatch.credentials import read_credential
from runwatch.delivery import Channel
from runwatch.delivery.policy import ChannelPolicy
from runwatch.delivery.registry import KINDS
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.rules import RuleSet
from runwatch.service.assemble import channel_policies
from runwatch.sources.base import Source
from runwatch.sources.push import PUSH_KEYS
from runwatch.sources.registry import PROVIDERS
from runwatch.sources.settings import ProviderSettings

if TYPE_CHECKING:
    pass

log = get_logger(__name__)

#: Config keys a reload does not apply (a warning names them): they need a restart.
RESTART_KEYS = ("instance", "state_dir", "state", "metrics_listen", "ingest_listen", "log_format")


@dataclass
class Plan:
    """What a validated config changes; ``channels`` is the whole new set, unchanged ones the running
    objects (their freshly built twins are closed), changed and added ones newly built."""

    config: Config
    ruleset: RuleSet
    channels: dict[str, Channel]
    policies: dict[str, ChannelPolicy]
    inputs: dict[str, object]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)


def plan(running: Config, inputs: Mapping[str, object], channels: Mapping[str, Channel], new: Config,
         ruleset: RuleSet, built: dict[str, Channel]) -> Plan:  # fmt: skip
    """The changes from ``running`` to ``new`` (already checked: ``ruleset`` and ``built`` are its).

    ``inputs`` is what each running channel was built from (:func:`channel_inputs` when it was built).
    """
    keep = {k: getattr(running.settings, k) for k in RESTART_KEYS}
    later = [k for k, v in keep.items() if getattr(new.settings, k) != v]
    config = dataclasses.replace(new, settings=new.settings.model_copy(update=keep))
    policies = channel_policies(config)
    out = Plan(config, ruleset, {}, policies, channel_inputs(config), needs_restart=later)
    for name, channel in built.items():
        if name not in channels:
            out.added.append(name)
        elif inputs.get(name) != out.inputs[name]:
            out.rebuilt.append(name)
        else:
            channel.close()
            channel = channels[name]
        out.channels[name] = channel
    out.removed = [name for name in channels if name not in built]
    return out


def channel_inputs(config: Config) -> dict[str, object]:
    """Everything each channel is built from: its block, its effective policy, and digests of the files
    its secret may come from (a rotated secret file is a changed channel even if the config is not)."""
    return {name: _channel_inputs(config, name) for name in config.settings.channels}


def _channel_inputs(config: Config, name: str) -> tuple[object, ...]:
    block = config.settings.channels[name]
    digests: list[str | None] = []
    for kind in KINDS:
        digests.append(_digest(read_credential(f"{name}_{kind.credential}")))
    for file in _file_keys(block.model_dump()):
        path = Path(file) if Path(file).is_absolute() else config.base_dir / file
        try:
            digests.append(_digest(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            digests.append(None)
    return block, config.settings.delivery.policy(block), tuple(digests)


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.strip().encode()).hexdigest()


def _file_keys(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str) and key.endswith("_file"):
                yield value
            else:
                yield from _file_keys(value)


def _polling(settings: ProviderSettings) -> dict[str, Any]:
    """A provider's settings but its push keys: what its source is built from."""
    return settings.model_dump(exclude=set(PUSH_KEYS))


class Pollers:
    """Each enabled provider's poll loop, started, stopped and rebuilt by reloads between two cycles.

    A loop asks :meth:`pause` between cycles; that is the one place a source is swapped or closed, so a
    cycle in progress always finishes with the source it began with (no batch is lost), and a changed
    ``poll_interval`` counts from the start of the last cycle. ``sources`` is the daemon's own dict.
    """

    def __init__(
        self,
        sources: dict[str, Source],
        settings: Mapping[str, ProviderSettings],
        metrics: Metrics,
        client_options: Mapping[str, Any],
    ) -> None:
        self.sources = sources
        self.settings = dict(settings)
        self.metrics = metrics
        self.client_options = client_options
        #: Providers whose source is rebuilt at their loop's next cycle boundary.
        self._stale: set[str] = set()
        self._nudge: dict[str, anyio.Event] = {}
        #: Providers whose loop runs now (a loop ends only at a cycle boundary).
        self._looping: set[str] = set()
        self._launch: Callable[[str], None] | None = None
        #: Sources replaced while no loop ran, closed with the rest.
        self._retired: list[Source] = []
        #: Providers a push asked to read now: their loop's pause ends at once.
        self._woken: set[str] = set()

    def build(self, name: str, settings: ProviderSettings) -> Source:
        return PROVIDERS[name].source(settings, self.metrics, **self.client_options)

    def start(self, tg: TaskGroup, loop: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        """Start a loop per source in ``tg``; providers a reload enables later start there too."""

        def launch(name: str) -> None:
            self._looping.add(name)
            tg.start_soon(loop, name)

        self._launch = launch
        for name in list(self.sources):
            launch(name)

    def update(self, enabled: Mapping[str, ProviderSettings]) -> tuple[list[str], list[str], list[str]]:
        """Take the reloaded providers (those with a key); returns (started, stopped, rebuilt)."""
        started: list[str] = []
        stopped: list[str] = []
        rebuilt: list[str] = []
        for name in [n for n in self.settings if n not in enabled]:
            del self.settings[name]
            stopped.append(name)
            if name in self._looping:
                self._poke(name)  # it closes its source at the cycle boundary
            elif (source := self.sources.pop(name, None)) is not None:
                self._retired.append(source)
        for name, new in enabled.items():
            old = self.settings.get(name)
            if old == new:
                continue
            self.settings[name] = new
            if old is not None and _polling(old) == _polling(new):
                if (source := self.sources.get(name)) is not None:
                    source.settings = new  # push keys only: the source goes on, reading them anew
                continue  # the listener takes them too
            if old is None and name not in self.sources:
                started.append(name)
                self.sources[name] = self.build(name, new)
                if self._launch is not None:
                    self._launch(name)
                continue
            (rebuilt if old is not None else started).append(name)
            if name in self._looping:
                self._stale.add(name)
                self._poke(name)
            else:
                self._retired.append(self.sources[name])
                self.sources[name] = self.build(name, new)
        return started, stopped, rebuilt

    def wake(self, name: str) -> None:
        """A push asks ``name``'s loop to read now: its pause ends at once (or the next one does not
        wait); the loop then reads what the pushes named (:meth:`Daemon.read_pushed`)."""
        if name in self.settings:
            self._woken.add(name)
            self._poke(name)

    def _poke(self, name: str) -> None:
        if (event := self._nudge.get(name)) is not None:
            event.set()

    async def pause(self, name: str, began: float) -> bool:
        """Between two cycles of ``name`` (the last began at ``began``, anyio time): wait out its
        interval, taking a reload's changes as they come, or until a push wakes it (:meth:`wake`);
        False when the provider was turned off."""
        while True:
            if name not in self.settings:
                self._looping.discard(name)
                if (source := self.sources.pop(name, None)) is not None:
                    await source.aclose()
                log.info("provider.off", provider=name, reason="removed by a reload; its state stays")
                return False
            if name in self._stale:
                self._stale.discard(name)
                old = self.sources[name]
                self.sources[name] = self.build(name, self.settings[name])
                await old.aclose()
                log.info("reload.provider_restarted", provider=name)
            remaining = self.settings[name].poll_interval - (anyio.current_time() - began)
            if remaining <= 0 or name in self._woken:
                self._woken.discard(name)
                return True
            nudge = self._nudge[name] = anyio.Event()
            with anyio.move_on_after(remaining):
                await nudge.wait()

    async def aclose(self) -> None:
        for source in [*self.sources.values(), *self._retired]:
            await source.aclose()
        self._retired.clear()
