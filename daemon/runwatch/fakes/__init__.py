"""Fake Exa and Olostep servers (real HTTP on loopback) for tests, the demo and the benchmark.

A :class:`Scenario` says which monitors exist and when each run changes; a fake plays it against a
clock (a ``ManualClock`` in tests) and answers the provider's read endpoints as the real API would,
with faults (errors, 429s, slowness, broken JSON, auth failures) injected on demand; posts the
providers' webhooks as the scenario makes their events (lost, repeated or retried on demand); and
streams Olostep's live logs (dropped, silent or replayed on demand).

May import: the basics and ``sources`` (the providers' names); never the daemon's own stages.
"""

from runwatch.fakes._base import FakeBase
from runwatch.fakes._common import RequestLog
from runwatch.fakes.exa import FakeExa
from runwatch.fakes.faults import Fault, FaultKind, Faults
from runwatch.fakes.olostep import FakeOlostep
from runwatch.fakes.push import Delivery, Pusher, PushEvent, Subscription
from runwatch.fakes.scenario import (
    ExaMonitor,
    ExaRun,
    ExaSection,
    ExaStep,
    OlostepEvent,
    OlostepMonitor,
    OlostepRun,
    OlostepSection,
    Scenario,
    default_scenario,
    dump_scenario,
    generate_scenario,
    load_scenario,
)
from runwatch.fakes.server import PROVIDERS, RunningFake, fake_server, make_fake, run_fake

__all__ = [
    "PROVIDERS",
    "Delivery",
    "ExaMonitor",
    "ExaRun",
    "ExaSection",
    "ExaStep",
    "FakeBase",
    "FakeExa",
    "FakeOlostep",
    "Fault",
    "FaultKind",
    "Faults",
    "OlostepEvent",
    "OlostepMonitor",
    "OlostepRun",
    "OlostepSection",
    "PushEvent",
    "Pusher",
    "RequestLog",
    "RunningFake",
    "Scenario",
    "Subscription",
    "default_scenario",
    "dump_scenario",
    "fake_server",
    "generate_scenario",
    "load_scenario",
    "make_fake",
    "run_fake",
]
