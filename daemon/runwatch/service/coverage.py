"""Each source's coverage, kept in the state for the next start's catch-up.

A source that can catch up through its provider's events (Exa, with push on:
:mod:`runwatch.sources.exa_events`) says up to when every monitor's runs are known
(:meth:`Coverage.covered`); the daemon writes that into the state's meta after its cycles (at most
once a :data:`STEP`, so the state is not written every cycle for it), and hands it back to each new
source before its first cycle (:meth:`Coverage.cover`): after a restart, or when another instance's
leadership ends, one paged request says which monitors had runs meanwhile, instead of a read of every
monitor. A coverage written a little late only makes that request reach further back; the state never
holds one that claims more than was read.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from runwatch.log import get_logger
from runwatch.store.interfaces import Fence, Meta

log = get_logger(__name__)

#: The coverage in the state moves on by at least this much at a time (seconds).
STEP = 60.0


@runtime_checkable
class Coverage(Protocol):
    """A source that can be told, and tell, up to when its monitors' runs are known."""

    def covered(self) -> float | None:
        """Up to when every monitor's runs are known (None: not every one's)."""
        ...

    def cover(self, since: float) -> None:
        """Every monitor the state knows had its runs known up to ``since`` (from the state)."""
        ...


class CoverageKeeper:
    """Seeds each new source from the state, and keeps the state up with each source."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self._seeded: dict[str, object] = {}
        self._written: dict[str, float] = {}

    @staticmethod
    def key(provider: str) -> str:
        return f"covered:{provider}"

    def before(self, provider: str, source: object) -> None:
        """Before a source's first cycle: what the state says (nothing, for a source without events)."""
        if self._seeded.get(provider) is source or not isinstance(source, Coverage):
            return
        self._seeded[provider] = source
        raw = self.meta.get_meta(self.key(provider))
        try:
            since = float(raw) if raw is not None else None
        except ValueError:
            since = None
        if since is not None:
            source.cover(since)
            self._written[provider] = since

    def after(self, provider: str, source: object, fence: Fence) -> None:
        """After a cycle of the provider's leader: the source's coverage into the state, if it moved
        (under the leader's ``fence``: one woken past its lease writes nothing)."""
        if not isinstance(source, Coverage):
            return
        covered = source.covered()
        if covered is None or covered < self._written.get(provider, 0.0) + STEP:
            return
        self.meta.set_meta(self.key(provider), repr(covered), fence=fence)
        self._written[provider] = covered
