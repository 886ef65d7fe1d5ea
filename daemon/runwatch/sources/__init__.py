"""Sources: one per provider, each polling its run endpoints and yielding what it read as
:class:`~runwatch.sources.base.MonitorBatch` objects (runs normalised to
:class:`~runwatch.model.RunSnapshot`) and monitor listings. A source reads; it does not drive the
pipeline.

``registry`` lists the providers (``exa``, ``olostep``): adding one is its module, its fake, and a line
there. ``http`` is the shared API client (timeouts, retries, budgets), ``schedule`` what to poll when,
``settings`` a provider's config keys, ``push`` what a provider's webhook may say (signatures checked,
bodies read into "read this monitor now"; never the truth about a run), ``olostep_live`` Olostep's
live-log stream of a monitor (Server-Sent Events, read by ``sse``).

May import: the basics only (``runwatch.model``, ``log``, ``metrics``, ``retry``, ...).
"""

from runwatch.sources.base import MonitorBatch, MonitorListing, PollReport, Source
from runwatch.sources.registry import PROVIDERS
from runwatch.sources.settings import ProviderSettings

__all__ = ["PROVIDERS", "MonitorBatch", "MonitorListing", "PollReport", "ProviderSettings", "Source"]
