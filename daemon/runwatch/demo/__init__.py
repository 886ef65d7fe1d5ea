"""``runwatch demo``: the whole pipeline on this machine, with no API key and no network.

It starts the fake Exa and Olostep servers with the shipped story, a local receiver that prints every
notification, and the daemon with the shipped config and rules (``demo/runwatch.yaml``,
``demo/rules/``), with push on: the fakes post their webhooks to the daemon's ``ingest_listen`` (the
Exa webhook registered with the fake as ``runwatch hooks setup exa`` would, each Olostep monitor's
``webhook.url`` pointed at it) and the daemon follows Olostep's live logs. It waits until the story
has played out and every notification is delivered, prints a summary (with what came by push) and
exits 0 (within 60 s). ``--forever`` keeps it running for a look at ``/metrics``.

May import: the basics, ``config``, ``fakes`` and ``service``; only ``commands`` imports it.
"""

from __future__ import annotations

import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx

from runwatch import log as logsetup
from runwatch.clock import SystemClock
from runwatch.config import load_config
from runwatch.demo.receiver import Receiver
from runwatch.fakes import FakeExa, FakeOlostep, RunningFake, Scenario, default_scenario, fake_server
from runwatch.httpserver import can_listen, serve
from runwatch.redact import redact

__all__ = ["run_demo"]

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "runwatch.yaml"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
#: The demo's webhook secret (also in demo/runwatch.yaml): a demo value, not a secret of anyone's.
DEMO_WEBHOOK_SECRET = "whsec_ZGVtby1vbmx5LXJ1bndhdGNoLXdlYmhvb2stc2VjcmV0"
#: The Olostep push token (also in demo/runwatch.yaml): a demo value.
DEMO_OLOSTEP_TOKEN = "demo-only-olostep-webhook-token-0123456789"
#: The Exa events the demo's webhook asks for (what ``runwatch hooks setup exa`` registers, in part).
DEMO_EXA_EVENTS = ["monitor.run.created", "monitor.run.completed"]
#: The demo must end by itself within this long, whatever happens.
DEADLINE = 55.0


def story_length(scenario: Scenario) -> float:
    """Seconds from the fakes' start until the last scripted thing has happened."""
    times = [step.at for m in scenario.exa.monitors for r in m.runs for step in r.timeline]
    times += [e.at for m in scenario.olostep.monitors for r in m.runs for e in r.events]
    return max([0.0, *times])


def _print_notification(path: str, body: dict[str, Any]) -> None:
    channel = path.strip("/")
    if "_signature" in body:  # a webhook: the signed v1 payload
        kind = "webhook, signature " + str(body["_signature"])
        print(f"  [receiver] {channel:<10} {body.get('title', '')}  ({kind}, id {body.get('id')})")
        sys.stdout.flush()
        return
    kind = body.get("type", "")
    print(f"  [receiver] {channel:<10} {kind:<8} {body.get('title', '')}")
    for line in str(body.get("message", "")).splitlines():
        print(f"  [receiver] {'':<10} {'':<8}   {line}")
    sys.stdout.flush()


def run_demo(*, forever: bool = False, metrics_listen: str | None = None) -> int:
    """``metrics_listen`` None: the default port, or a free one (said in one line) when it is taken."""
    logsetup.setup("warning")
    if metrics_listen is None:
        metrics_listen = DEFAULT_METRICS_LISTEN
        if not can_listen(metrics_listen):
            print(
                f"runwatch demo: {metrics_listen} is taken, serving /metrics on a free port instead"
                " (--metrics-listen HOST:PORT picks one)"
            )
            metrics_listen = "127.0.0.1:0"
    try:
        return anyio.run(_demo, forever, metrics_listen)
    except OSError as exc:
        print(redact(f"runwatch demo: {exc}"), file=sys.stderr)
        return 1
    except ExceptionGroup as group:  # raised inside the fakes' task groups
        match, _ = group.split(OSError)
        if match is None:
            raise
        first: BaseException = match
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        print(redact(f"runwatch demo: {first}"), file=sys.stderr)
        return 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _push_to(
    exa: RunningFake[FakeExa], olostep: RunningFake[FakeOlostep], ingest: str, token: str
) -> str:
    """Point the fakes' webhooks at the daemon's push listener; the Exa webhook's secret."""
    async with httpx.AsyncClient() as client:
        made = await client.post(
            f"{exa.base_url}/v0/webhooks",
            json={"events": DEMO_EXA_EVENTS, "url": f"http://{ingest}/hooks/exa"},
            headers={"x-api-key": "demo-key"},
        )
        made.raise_for_status()
    for monitor in olostep.fake.scenario.olostep.monitors:
        olostep.fake.set_webhook(monitor.id, f"http://{ingest}/hooks/olostep/{token}")
    secret: str = made.json()["secret"]
    return secret


async def _demo(forever: bool, metrics_listen: str) -> int:
    from runwatch.service.app import Daemon

    scenario = default_scenario()
    clock = SystemClock()
    receiver = Receiver(on_message=_print_notification, secrets={"/tickets": DEMO_WEBHOOK_SECRET})
    with tempfile.TemporaryDirectory(prefix="runwatch-demo-") as state_dir:
        async with (
            fake_server("exa", scenario, clock) as exa,
            fake_server("olostep", scenario, clock) as olostep,
            serve(receiver.app, "127.0.0.1:0", name="receiver") as recv,
        ):
            started = clock.now()
            ingest = f"127.0.0.1:{_free_port()}"
            secret = await _push_to(exa, olostep, ingest, DEMO_OLOSTEP_TOKEN)
            config = load_config(
                DEMO_CONFIG,
                overrides={
                    "state_dir": state_dir,
                    "metrics_listen": metrics_listen,
                    "ingest_listen": ingest,
                    "providers": {
                        "exa": {"base_url": exa.base_url, "webhook_secret": secret},
                        "olostep": {"base_url": olostep.base_url},
                    },
                    "channels": {
                        "ops-slack": {"apprise": f"json://127.0.0.1:{recv.port}/ops-slack"},
                        "ops-mail": {"apprise": f"json://127.0.0.1:{recv.port}/ops-mail"},
                        "tickets": {"webhook": {"url": f"http://127.0.0.1:{recv.port}/tickets"}},
                    },
                },
            )
            daemon = Daemon(config, clock=clock)
            print(
                "runwatch demo: fake Exa and Olostep APIs, a local receiver, and the daemon, all on loopback."
            )
            print(f"  exa fake:      {exa.base_url}")
            print(f"  olostep fake:  {olostep.base_url}")
            print(f"  push:          http://{ingest}/hooks/   (the fakes post their webhooks here)")
            async with daemon.running() as http:
                print(f"  metrics:       {http.url}/metrics   (also /healthz, /readyz)")
                print(f"  config:        {DEMO_CONFIG}")
                print(
                    f"  story:         {story_length(scenario):.0f} s of monitor runs; notifications follow:"
                )
                sys.stdout.flush()
                with anyio.move_on_after(DEADLINE):
                    await _until_story_done(daemon, started + story_length(scenario), clock)
                _summary(daemon, receiver)
                if forever:
                    print("--forever: still running; Ctrl-C to stop.")
                    sys.stdout.flush()
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            break
    return 0


async def _until_story_done(daemon: Any, story_end: float, clock: SystemClock) -> None:
    await anyio.sleep(max(0.0, story_end - clock.now()))
    # One full poll of each provider after the last scripted step, then an empty outbox.
    for name in daemon.sources:
        await daemon.wait_polls(name, daemon.polls_done[name] + 1)
    await daemon.deliverer.wait_empty()


def _value(daemon: Any, name: str, labels: dict[str, str]) -> int:
    v = daemon.metrics.registry.get_sample_value(name, labels)
    return int(v or 0)


def _counter_samples(registry: Any, name: str) -> list[tuple[dict[str, str], int]]:
    """(labels, value) of each ``_total`` sample of one counter family."""
    return [
        (s.labels, int(s.value))
        for metric in registry.collect()
        if metric.name == name
        for s in metric.samples
        if s.name.endswith("_total")
    ]


def _summary(daemon: Any, receiver: Receiver) -> None:
    reg = daemon.metrics.registry
    print("\nSummary")
    print("  detected:")
    for labels, value in _counter_samples(reg, "runwatch_changes_detected"):
        print(f"    {labels['provider']:<8} {labels['kind']:<11} {value}")
    print("  rules matched:")
    for labels, value in _counter_samples(reg, "runwatch_rule_matches"):
        print(f"    {labels['rule']:<22} {value}")
    print("  sent:")
    for name in daemon.channels:
        sent = _value(daemon, "runwatch_notifications_sent_total", {"channel": name})
        failed = _value(daemon, "runwatch_delivery_attempts_total", {"channel": name, "outcome": "retry"})
        print(
            f"    {name:<10} {sent} sent, {failed} failed attempts, received {len(receiver.on('/' + name))}"
        )
    print(f"  receiver got {len(receiver.messages)} notifications in all.")
    print("  push:")
    for provider in daemon.sources:
        labels = {"provider": provider}
        accepted = _value(daemon, "runwatch_ingest_requests_total", {**labels, "outcome": "accepted"})
        reads = reg.get_sample_value("runwatch_push_to_read_seconds_count", labels) or 0.0
        total = reg.get_sample_value("runwatch_push_to_read_seconds_sum", labels) or 0.0
        mean = f", {total / reads * 1000:.0f} ms from push to read" if reads else ""
        print(f"    {provider:<8} {accepted} pushes accepted, {int(reads)} reads they asked for{mean}")
    print(f"    olostep  {daemon.live.fed} steps came by live-log stream (a run's end there asks a read too)")
    sys.stdout.flush()
