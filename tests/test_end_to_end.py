"""The whole daemon against the fake Exa and Olostep servers, a json:// receiver and an SMTP server.

The fakes' story moves only when a test advances their ManualClock; the daemon polls for real. Tests
wait on events (a message arrived, a poll cycle finished), never on the wall clock.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import FakeExa, FakeOlostep, Fault, RunningFake, Scenario, fake_server
from runwatch.service.app import Daemon
from tests.conftest import SMTP_PASSWORD, ReceiverServer, SmtpSink, mailto_url, write_config

pytestmark = pytest.mark.anyio

EXA_KEY = "exa-test-key-0123456789"
OLOSTEP_KEY = "olostep-test-key-9876543210"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}

STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": "monitor_prod_news",
                    "runs": [
                        {
                            "id": "mrun_old",
                            "timeline": [
                                {"at": "-2h", "status": "created"},
                                {"at": "-1h", "status": "failed", "failed_reason": "old news"},
                            ],
                        },
                        {
                            "id": "mrun_1",
                            "timeline": [
                                {"at": 0, "status": "created"},
                                {"at": 10, "status": "running"},
                                {"at": 20, "status": "failed", "failed_reason": "Quota exceeded"},
                            ],
                        },
                    ],
                },
                {
                    "id": "monitor_staging",
                    "runs": [
                        {
                            "id": "mrun_s1",
                            "timeline": [
                                {"at": 0, "status": "created"},
                                {"at": 20, "status": "failed", "failed_reason": "timeout"},
                            ],
                        },
                    ],
                },
            ]
        },
        "olostep": {
            "monitors": [
                {
                    "id": "monitor_prices",
                    "runs": [
                        {
                            "id": "run_0001",
                            "events": [
                                {"at": 5, "type": "work_received", "message": "work received"},
                                {"at": 15, "type": "node_start", "message": "node start fetch"},
                                {"at": 25, "type": "run_complete", "message": "run complete: 3 changes"},
                            ],
                        },
                    ],
                },
            ]
        },
    }
)

RULES = """
rules:
  - name: exa-run-failed
    match:
      provider: exa
      monitor: ["monitor_prod_*"]
      kind: run.status
      from: [created, running]
      to: failed
      failed_reason: "(?i)quota|timeout"
    severity: critical
    notify: [ops-json, ops-mail]
    title: "{{ provider }} monitor {{ monitor_id }}: run {{ run_id }} {{ to }}"
    body: "{{ failed_reason }} (was {{ from }}; raw: {{ run.failedReason }})"
  - name: olostep-run-complete
    match: {provider: olostep, kind: run.event, event: run_complete}
    notify: [olostep-json]
"""


def config_text(
    state: Path,
    exa: RunningFake[Any],
    olostep: RunningFake[Any],
    rec: ReceiverServer,
    smtp_port: int,
    interval: str = "100ms",
    state_url: str | None = None,
) -> str:
    return f"""
state_dir: {state}
{f"state: {{url: '{state_url}'}}" if state_url else ""}
metrics_listen: 127.0.0.1:0
rule_files: [rules/*.yaml]
providers:
  exa:
    {{base_url: "{exa.base_url}", api_key: {EXA_KEY}, poll_interval: {interval},
      idle_poll_interval: 100ms, retries: 2}}
  olostep:
    {{base_url: "{olostep.base_url}", api_key: {OLOSTEP_KEY}, poll_interval: {interval},
      idle_poll_interval: 100ms, retries: 2}}
channels:
  ops-json: {{apprise: "{rec.url("/ops")}"}}
  olostep-json: {{apprise: "{rec.url("/olostep")}"}}
  ops-mail: {{apprise: "{mailto_url(smtp_port)}"}}
delivery: {{retry_initial: 50ms, retry_max: 200ms}}
"""


@asynccontextmanager
async def fakes(clock: ManualClock) -> AsyncIterator[tuple[RunningFake[FakeExa], RunningFake[FakeOlostep]]]:
    async with fake_server("exa", STORY, clock) as exa, fake_server("olostep", STORY, clock) as olostep:
        yield exa, olostep


async def first_polls(daemon: Daemon) -> None:
    """Until every provider has finished its first poll cycle (the silent baseline)."""
    for name in daemon.sources:
        await daemon.wait_polls(name, 1)


async def poll_all(daemon: Daemon) -> None:
    """One poll cycle of every provider, driven by the test (for daemons with a 1h interval)."""
    for name in daemon.sources:
        await daemon.poll_once(name)


async def settle(daemon: Daemon, polls: int = 2) -> None:
    """Let every provider finish ``polls`` more full poll cycles."""
    for name in daemon.sources:
        await daemon.wait_polls(name, daemon.polls_done[name] + polls)


async def test_failure_and_event_reach_their_channels_exactly_once(
    tmp_path: Path, receiver: ReceiverServer, smtp: SmtpSink, log_lines: io.StringIO, state_url: str | None
) -> None:
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, olostep):
        text = config_text(tmp_path / "state", exa, olostep, receiver, smtp.port, state_url=state_url)
        cfg = load_config(write_config(tmp_path, text, RULES))
        daemon = Daemon(cfg, client_options=FAST)
        async with daemon.running() as http:
            await first_polls(daemon)  # first sight: the baseline, recorded silently
            clock.advance(30)
            await receiver.receiver.wait_for(1, "/ops")
            await receiver.receiver.wait_for(1, "/olostep")
            await smtp.wait_for(1)
            await settle(daemon, 3)  # more polls must not repeat anything
            async with httpx.AsyncClient() as client:
                metrics_text = (await client.get(f"{http.url}/metrics")).text
                ready = await client.get(f"{http.url}/readyz")
    assert (tmp_path / "state" / "runwatch.sqlite3").exists() == (state_url is None)  # one store, not both
    rec = receiver.receiver
    [ops] = rec.on("/ops")
    assert ops["title"] == "exa monitor monitor_prod_news: run mrun_1 failed"
    assert ops["message"] == "Quota exceeded (was created; raw: Quota exceeded)"
    assert ops["type"] == "failure"
    [olo] = rec.on("/olostep")
    assert "run_complete" in olo["title"] and "run_0001" in olo["title"]
    assert len(rec.messages) == 2  # staging's failure, the old run and other changes matched nothing
    [mail] = smtp.messages
    assert mail["Subject"] == "exa monitor monitor_prod_news: run mrun_1 failed"
    assert mail["To"] == "oncall@example.com"

    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}

    def sample(name: str, **labels: str) -> float:
        for fam in families.values():
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        raise AssertionError(f"{name}{labels} not in /metrics")

    assert sample("runwatch_notifications_sent_total", channel="ops-json") == 1
    assert sample("runwatch_notifications_sent_total", channel="ops-mail") == 1
    assert sample("runwatch_notifications_sent_total", channel="olostep-json") == 1
    assert sample("runwatch_rule_matches_total", rule="exa-run-failed") == 1
    assert sample("runwatch_changes_detected_total", provider="exa", kind="run.status") == 2
    assert sample("runwatch_changes_detected_total", provider="olostep", kind="run.event") == 3
    # mrun_old was created before the first start's look-back (1h): out of scope, not tracked.
    assert sample("runwatch_runs_tracked", provider="exa", status="failed") == 2
    assert sample("runwatch_last_successful_poll_timestamp_seconds", provider="olostep") > 0
    assert sample("runwatch_delivery_latency_seconds_count", channel="ops-mail") == 1
    assert sample("runwatch_build_info", version=__import__("runwatch").__version__) == 1
    assert ready.status_code == 200 and ready.json()["ready"] is True

    logs = log_lines.getvalue()
    assert "change.detected" in logs and "notify.sent" in logs
    for secret in (EXA_KEY, OLOSTEP_KEY, SMTP_PASSWORD):
        assert secret not in logs
        assert secret not in metrics_text


async def test_restart_in_the_middle_repeats_nothing_and_misses_nothing(
    tmp_path: Path, receiver: ReceiverServer, smtp: SmtpSink, state_url: str | None
) -> None:
    rules = """
rules:
  - {name: every-exa-status, match: {provider: exa, kind: run.status}, notify: [ops-json]}
  - {name: every-olostep-event, match: {provider: olostep, kind: run.event}, notify: [olostep-json]}
"""
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, olostep):
        text = config_text(tmp_path / "state", exa, olostep, receiver, smtp.port, "1h", state_url)
        cfg_path = write_config(tmp_path, text, rules)
        first = Daemon(load_config(cfg_path), client_options=FAST)
        async with first.running():
            await first_polls(first)  # baseline at t=0
            clock.advance(12)  # mrun_1 running; run_0001 has logged work_received
            await first.poll_once("exa")
            await first.poll_once("olostep")
            await receiver.receiver.wait_for(1, "/ops")
            await receiver.receiver.wait_for(1, "/olostep")
        # Down while mrun_1 and mrun_s1 fail and run_0001 logs node_start and run_complete.
        clock.advance(20)
        second = Daemon(load_config(cfg_path), client_options=FAST)
        async with second.running():
            await first_polls(second)
            await receiver.receiver.wait_for(3, "/ops")
            await receiver.receiver.wait_for(3, "/olostep")
            await first_polls(second)
    ops = [m["title"] for m in receiver.receiver.on("/ops")]
    assert len(ops) == 3, ops
    assert sum(t.endswith("created -> running") for t in ops) == 1
    assert sum("mrun_1: running -> failed" in t for t in ops) == 1
    assert sum("mrun_s1: created -> failed" in t for t in ops) == 1
    events = [m["title"] for m in receiver.receiver.on("/olostep")]
    assert [e for e in events if "work_received" in e] and len(events) == 3, events
    assert [t.split("event ")[-1] for t in events] == ["work_received", "node_start", "run_complete"]


async def test_faults_cause_no_crash_no_false_alert_and_no_lost_transition(
    tmp_path: Path, receiver: ReceiverServer, smtp: SmtpSink, log_lines: io.StringIO
) -> None:
    rules = """
rules:
  - {name: every-exa-status, match: {provider: exa, kind: run.status}, notify: [ops-json]}
  - {name: every-olostep-change, match: {provider: olostep}, notify: [olostep-json]}
"""
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, olostep):
        cfg_path = write_config(
            tmp_path, config_text(tmp_path / "state", exa, olostep, receiver, smtp.port, interval="1h"), rules
        )
        daemon = Daemon(load_config(cfg_path), client_options=FAST)
        async with daemon.running():
            await first_polls(daemon)
            # Every kind of trouble, more of it than the retries absorb:
            exa.fake.faults.add(Fault(path="/v0/monitors/*/runs", kind="status", status=503, count=6))
            exa.fake.faults.add(Fault(path="/v0/monitors", kind="garbage", count=1))
            olostep.fake.faults.add(
                Fault(path="/v1/monitors/*/runs/*", kind="rate_limit", retry_after=0.01, count=3)
            )
            olostep.fake.faults.add(Fault(path="/v1/monitors/*/events", kind="garbage", count=1))
            clock.advance(30)
            assert not await daemon.poll_once("exa")
            assert not await daemon.poll_once("olostep")
            assert receiver.receiver.messages == []  # nothing half-seen was reported
            # The APIs answer again: every transition comes through, once.
            for _ in range(3):
                await daemon.poll_once("exa")
                await daemon.poll_once("olostep")
            await receiver.receiver.wait_for(2, "/ops")
            await receiver.receiver.wait_for(4, "/olostep")
            await poll_all(daemon)
            errors = daemon.metrics.registry.get_sample_value
            assert (errors("runwatch_poll_errors_total", {"provider": "exa", "reason": "http_503"}) or 0) >= 1
            assert (
                errors("runwatch_api_retries_total", {"provider": "olostep", "reason": "http_429"}) or 0
            ) >= 2
            assert errors("runwatch_polls_total", {"provider": "exa", "outcome": "error"}) == 1
    titles = sorted(m["title"] for m in receiver.receiver.on("/ops"))
    assert len(titles) == 2 and all("failed" in t for t in titles), titles
    assert len(receiver.receiver.on("/olostep")) == 4  # three events and the run's completion
    assert "poll.error" in log_lines.getvalue()


async def test_refused_key_stops_one_provider_not_the_other(
    tmp_path: Path, receiver: ReceiverServer, smtp: SmtpSink, log_lines: io.StringIO
) -> None:
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, olostep):
        cfg_path = write_config(
            tmp_path, config_text(tmp_path / "state", exa, olostep, receiver, smtp.port), RULES
        )
        exa.fake.faults.add(Fault(kind="auth"))
        daemon = Daemon(load_config(cfg_path), client_options=FAST)
        async with daemon.running() as http:
            await first_polls(daemon)
            clock.advance(30)
            await receiver.receiver.wait_for(1, "/olostep")
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"{http.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["providers"]["exa"] == "no successful poll yet"
    assert receiver.receiver.on("/ops") == []
    assert (
        daemon.metrics.registry.get_sample_value(
            "runwatch_poll_errors_total", {"provider": "exa", "reason": "auth"}
        )
        or 0
    ) >= 1
    logs = log_lines.getvalue()
    assert "event=provider.auth_failed provider=exa" in logs
    assert EXA_KEY not in logs


async def test_channel_down_retries_then_delivers_without_blocking_polls(
    tmp_path: Path, receiver: ReceiverServer, smtp: SmtpSink
) -> None:
    clock = ManualClock(time.time())
    async with fakes(clock) as (exa, olostep):
        cfg_path = write_config(
            tmp_path, config_text(tmp_path / "state", exa, olostep, receiver, smtp.port), RULES
        )
        receiver.receiver.fail_with = 503
        daemon = Daemon(load_config(cfg_path), client_options=FAST)
        async with daemon.running():
            await first_polls(daemon)
            clock.advance(30)
            await smtp.wait_for(1)  # the mail channel is not held up by the json one
            await settle(daemon, 2)  # nor is polling
            failed = daemon.metrics.registry.get_sample_value
            while (
                not (
                    failed("runwatch_delivery_attempts_total", {"channel": "ops-json", "outcome": "retry"})
                    or 0
                )
                >= 2
            ):
                await daemon.wait_polls("exa", daemon.polls_done["exa"] + 1)
            receiver.receiver.fail_with = None
            await receiver.receiver.wait_for(1, "/ops")
    assert len(receiver.receiver.on("/ops")) == 1
