"""A reload applies the whole config: channels added, removed and changed, providers' intervals and
keys; a broken file changes nothing. The real daemon against the fake providers and real webhook
receivers; the fakes' story (a run failing every 1000 s) moves only when the test advances the clock.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import RunningFake, Scenario, fake_server
from runwatch.service.app import Daemon
from tests.conftest import ReceiverServer, write_config
from tests.test_end_to_end import EXA_KEY, FAST, OLOSTEP_KEY
from tests.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: run_i of monitor_a fails at i * 1000 s: each ``clock.advance(1000)`` is one new failure.
STORY = Scenario.model_validate(
    {
        "exa": {
            "monitors": [
                {
                    "id": "monitor_a",
                    "runs": [
                        {
                            "id": f"run_{i}",
                            "timeline": [
                                {"at": 0, "status": "created"},
                                {"at": 1, "status": "running"},
                                {"at": 1000 * i, "status": "failed", "failed_reason": "boom"},
                            ],
                        }
                        for i in range(1, 6)
                    ],
                }
            ]
        },
        "olostep": {"monitors": [{"id": "monitor_o"}]},
    }
)


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EXA_API_KEY", "OLOSTEP_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)


def write(
    tmp_path: Path,
    exa: RunningFake[Any] | str,
    channels: dict[str, str],
    notify: list[str],
    *,
    olostep: RunningFake[Any] | None = None,
    exa_key: bool = True,
    interval: str = "100ms",
    extra: str = "",
    rule_extra: str = "",
    hook: str = "",
) -> Path:
    """The config and rule file: a webhook channel per ``channels`` entry (name: URL, or an apprise
    URL when it is not http), one rule sending run failures to ``notify``."""
    base = exa if isinstance(exa, str) else exa.base_url
    key = f", api_key: {EXA_KEY}" if exa_key else ""
    body = f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\nproviders:\n"
    body += f'  exa: {{base_url: "{base}"{key}, poll_interval: {interval}, idle_poll_interval: {interval}}}\n'
    if olostep is not None:
        body += (
            f'  olostep: {{base_url: "{olostep.base_url}", api_key: {OLOSTEP_KEY},'
            " poll_interval: 100ms, idle_poll_interval: 100ms}\n"
        )
    body += "channels:\n"
    for name, url in channels.items():
        if url.startswith("http"):
            body += f"  {name}: {{webhook: {{url: '{url}', secret: {SECRET}{hook}}}}}\n"
        else:
            body += f"  {name}: {{apprise: '{url}'}}\n"
    body += extra
    rule = "{name: failed, match: {kind: run.status, to: failed}, notify: [" + ", ".join(notify) + "]"
    return write_config(tmp_path, body, f"rules:\n  - {rule}{rule_extra}}}\n")


@asynccontextmanager
async def daemon_on(cfg: Path, clock: ManualClock) -> AsyncIterator[Daemon]:
    """A running daemon past its first (silent, baseline) poll of every provider."""
    daemon = Daemon(load_config(cfg), clock=clock, client_options=FAST)
    async with daemon.running():
        for name in daemon.sources:
            await daemon.wait_polls(name, 1)
        yield daemon


async def quiet(daemon: Daemon) -> None:
    """Two more poll cycles of every provider and an empty outbox: whatever was due has gone out."""
    for name in daemon.sources:
        await daemon.wait_polls(name, daemon.polls_done[name] + 2)
    with anyio.fail_after(15):
        await daemon.deliverer.wait_empty()


def runs(rx: WebhookServer) -> list[str]:
    return [r.payload["run_id"] for r in rx.delivered() if r.payload]


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.metrics.registry.get_sample_value(name, labels)


async def test_a_channel_added_by_reload_gets_the_next_alert_and_nothing_before_it(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        webhook_server(SECRET) as rx_a,
        webhook_server(SECRET) as rx_b,
    ):
        cfg = write(tmp_path, exa, {"a": rx_a.url}, ["a"])
        async with daemon_on(cfg, clock) as daemon:
            clock.advance(1000)
            await rx_a.wait_for(1)
            write(tmp_path, exa, {"a": rx_a.url, "b": rx_b.url}, ["a", "b"])
            worker_a = daemon.deliverer.workers["a"]
            assert daemon.reload()
            assert daemon.deliverer.workers["a"] is worker_a  # unchanged: not restarted
            assert sample(daemon, "runwatch_notifications_sent_total", channel="b") == 0  # primed
            clock.advance(1000)
            await rx_b.wait_for(1)
            await rx_a.wait_for(2)
            await quiet(daemon)
            assert sample(daemon, "runwatch_notifications_sent_total", channel="b") == 1
    assert runs(rx_a) == ["run_1", "run_2"]
    assert runs(rx_b) == ["run_2"]
    assert len(rx_b.requests) == 1


async def test_a_removed_channels_pending_rows_survive_and_go_out_when_it_is_back(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        webhook_server(SECRET) as rx_a,
        webhook_server(SECRET) as rx_b,
    ):
        both = {"a": rx_a.url, "b": rx_b.url}
        cfg = write(tmp_path, exa, both, ["a", "b"])
        rx_b.script = [503]  # b fails once: its row waits for a retry
        async with daemon_on(cfg, clock) as daemon:
            clock.advance(1000)
            await rx_a.wait_for(1)
            await rx_b.wait_for(1, delivered=False)
            worker_b = daemon.deliverer.workers["b"]
            write(tmp_path, exa, {"a": rx_a.url}, ["a"])
            assert daemon.reload()
            with anyio.fail_after(10):
                await worker_b.finished.wait()  # it stopped after its batch, which it recorded
            assert "b" not in daemon.deliverer.workers
            [row] = daemon.store.outbox.items(state="pending", channel="b", limit=None)
            assert row.attempts == 1
            assert "reload.channel_removed channel=b pending=1" in log_lines.getvalue()
            with anyio.fail_after(60):
                listed = await anyio.run_process(
                    [sys.executable, "-m", "runwatch", "outbox", "list", "--json", "--config", str(cfg)]
                )
            assert [(r["id"], r["state"]) for r in json.loads(listed.stdout) if r["channel"] == "b"] == [
                (row.id, "pending")
            ]
            clock.advance(1000)  # run_2 fails: only a is notified; nothing is sent to b, nobody works it
            await rx_a.wait_for(2)
            await quiet(daemon)
            assert len(rx_b.requests) == 1
            write(tmp_path, exa, both, ["a"])
            assert daemon.reload()
            await rx_b.wait_for(1)
            await quiet(daemon)
    assert runs(rx_b) == ["run_1"]
    assert [r.id for r in rx_b.requests] == [row.id, row.id]  # the same notification, retried once
    assert runs(rx_a) == ["run_1", "run_2"]


async def test_a_changed_url_sends_the_next_alert_to_the_new_receiver_once_and_keeps_secrets_out_of_logs(
    tmp_path: Path, receiver: ReceiverServer, log_lines: io.StringIO
) -> None:
    clock = ManualClock(time.time())
    old_pw, new_pw = "Old-Pa55word-x9", "New-Pa55word-y7"
    port = receiver.http.port
    async with (
        fake_server("exa", STORY, clock) as exa,
        webhook_server(SECRET) as rx_1,
        webhook_server(SECRET) as rx_2,
    ):
        json_url = f"json://hook:{{}}@127.0.0.1:{port}/{{}}"
        cfg = write(tmp_path, exa, {"a": rx_1.url, "j": json_url.format(old_pw, "j")}, ["a", "j"])
        async with daemon_on(cfg, clock) as daemon:
            clock.advance(1000)
            await rx_1.wait_for(1)
            await receiver.receiver.wait_for(1, "/j")
            write(tmp_path, exa, {"a": rx_2.url, "j": json_url.format(new_pw, "j2")}, ["a", "j"])
            assert daemon.reload()
            clock.advance(1000)
            await rx_2.wait_for(1)
            await receiver.receiver.wait_for(1, "/j2")
            await quiet(daemon)
    assert runs(rx_1) == ["run_1"] and len(rx_1.requests) == 1
    assert runs(rx_2) == ["run_2"] and len(rx_2.requests) == 1
    assert len(receiver.receiver.on("/j")) == 1 and len(receiver.receiver.on("/j2")) == 1
    logs = log_lines.getvalue()
    assert "reload.applied channels_rebuilt=a,j" in logs
    assert old_pw not in logs and new_pw not in logs


async def test_a_batch_in_flight_finishes_on_the_old_channel_before_the_rebuilt_one_takes_over(
    tmp_path: Path,
) -> None:
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        webhook_server(SECRET) as rx_1,
        webhook_server(SECRET) as rx_2,
    ):
        hook = ", timeout: 300ms"
        rx_1.default = "hang"  # the old endpoint never answers: the send ends at the channel's timeout
        cfg = write(tmp_path, exa, {"a": rx_1.url}, ["a"], hook=hook)
        async with daemon_on(cfg, clock) as daemon:
            clock.advance(1000)
            await rx_1.wait_for(1, delivered=False)  # the batch is in flight now
            old = daemon.deliverer.workers["a"]
            write(tmp_path, exa, {"a": rx_2.url}, ["a"], hook=hook)
            assert daemon.reload()
            assert not old.finished.is_set()  # not cut mid-send
            with anyio.fail_after(10):
                await old.finished.wait()
            [row] = daemon.store.outbox.items(state="pending", channel="a", limit=None)
            assert row.attempts == 1  # the old worker recorded its try, then let go
            clock.advance(600)  # past the retry (the story's next failure is at 2000)
            daemon.deliverer.wake()
            await rx_2.wait_for(1)
            await quiet(daemon)
    assert [r.id for r in rx_1.requests] == [row.id]
    assert [r.id for r in rx_2.requests] == [row.id]  # the same notification, once on each side
    assert runs(rx_2) == ["run_1"]


async def test_a_changed_poll_interval_takes_effect_at_once(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, webhook_server(SECRET) as rx:
        cfg = write(tmp_path, exa, {"a": rx.url}, ["a"], interval="1h")
        async with daemon_on(cfg, clock) as daemon:
            source = daemon.sources["exa"]
            seen, polls = exa.fake.requests.count(), daemon.polls_done["exa"]
            write(tmp_path, exa, {"a": rx.url}, ["a"], interval="100ms")
            assert daemon.reload()
            with anyio.fail_after(10):  # at 1h this would wait an hour
                await daemon.wait_polls("exa", polls + 3)
            assert exa.fake.requests.count() > seen
            assert daemon.sources["exa"] is not source  # rebuilt between two cycles
            clock.advance(1000)  # and the rebuilt source still sees what is news
            await rx.wait_for(1)
            assert daemon.health.intervals["exa"] == 0.1
    assert runs(rx) == ["run_1"]


async def test_a_provider_given_a_key_starts_polling_and_one_without_stops(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    clock = ManualClock(time.time())
    async with (
        fake_server("exa", STORY, clock) as exa,
        fake_server("olostep", STORY, clock) as olostep,
        webhook_server(SECRET) as rx,
    ):
        cfg = write(tmp_path, exa, {"a": rx.url}, ["a"])
        async with daemon_on(cfg, clock) as daemon:
            assert list(daemon.sources) == ["exa"] and olostep.fake.requests.count() == 0
            write(tmp_path, exa, {"a": rx.url}, ["a"], olostep=olostep)
            assert daemon.reload()
            with anyio.fail_after(10):
                await daemon.wait_polls("olostep", 2)
            assert olostep.fake.requests.count("list_monitors") >= 1
            assert (sample(daemon, "runwatch_polls_total", provider="olostep", outcome="ok") or 0) >= 2
            assert sample(daemon, "runwatch_poll_errors_total", provider="olostep", reason="auth") == 0
            assert "olostep" in daemon.health.intervals
            write(tmp_path, exa, {"a": rx.url}, ["a"], olostep=olostep, exa_key=False)
            assert daemon.reload()
            with anyio.fail_after(10):
                await daemon.wait_polls("olostep", daemon.polls_done["olostep"] + 2)
                assert "exa" not in daemon.sources
                seen = exa.fake.requests.count()
                await daemon.wait_polls("olostep", daemon.polls_done["olostep"] + 2)
            assert exa.fake.requests.count() == seen
            assert "exa" not in daemon.health.intervals
    logs = log_lines.getvalue()
    assert "reload.applied providers_started=olostep" in logs
    assert "reload.applied providers_stopped=exa" in logs
    assert OLOSTEP_KEY not in logs


async def test_a_broken_config_changes_nothing_and_says_why(tmp_path: Path, log_lines: io.StringIO) -> None:
    clock = ManualClock(1_780_000_000.0)
    nowhere = "http://127.0.0.1:9"
    cfg = write(tmp_path, nowhere, {"a": f"{nowhere}/a"}, ["a"])
    daemon = Daemon(load_config(cfg), clock=clock)
    gauge = "runwatch_config_last_reload_successful"
    stamp = "runwatch_config_last_reload_success_timestamp_seconds"
    assert sample(daemon, stamp) == clock.now()
    running = (daemon.ruleset, dict(daemon.channels), dict(daemon.sources), dict(daemon.deliverer.workers))
    clock.advance(60)

    cfg.write_text(cfg.read_text() + "delivery: {max_attempts: 3\n")  # bad YAML
    assert not daemon.reload()
    assert (sample(daemon, gauge), sample(daemon, stamp)) == (0, clock.now() - 60)
    assert "event=reload.rejected" in log_lines.getvalue() and "runwatch.yaml:" in log_lines.getvalue()

    # A good config file, but its rule names a channel it no longer has; and a provider change.
    write(tmp_path, nowhere, {"b": f"{nowhere}/b"}, ["a"], interval="5s")
    assert not daemon.reload()
    assert "rules/main.yaml:2: rules[0].notify" in log_lines.getvalue()
    assert (daemon.ruleset, daemon.channels, daemon.sources, daemon.deliverer.workers) == running
    assert daemon.pollers.settings["exa"].poll_interval == 0.1
    assert sample(daemon, gauge) == 0

    write(tmp_path, nowhere, {"b": f"{nowhere}/b"}, ["b"], interval="5s")
    assert daemon.reload()
    assert (sample(daemon, gauge), sample(daemon, stamp)) == (1, clock.now())
    assert list(daemon.deliverer.workers) == ["b"] and daemon.pollers.settings["exa"].poll_interval == 5
    assert sample(daemon, "runwatch_config_reloads_total", outcome="failure") == 2
    await daemon.pollers.aclose()
    daemon.store.close()


async def test_an_open_lifecycle_alert_is_not_sent_again_by_a_reload(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    async with fake_server("exa", STORY, clock) as exa, webhook_server(SECRET) as rx:
        lifecycle = ", send_resolved: true, group_by: [monitor_id]"
        cfg = write(tmp_path, exa, {"a": rx.url}, ["a"], rule_extra=lifecycle)
        async with daemon_on(cfg, clock) as daemon:
            clock.advance(1000)
            await rx.wait_for(1)
            await quiet(daemon)
            assert daemon.store.alerts.firing() == 1
            write(tmp_path, exa, {"a": rx.url}, ["a"], rule_extra=lifecycle)
            assert daemon.reload()  # the same config
            stricter = "delivery: {max_attempts: 5}\n"
            write(tmp_path, exa, {"a": rx.url}, ["a"], rule_extra=lifecycle, extra=stricter)
            assert daemon.reload()  # channel a rebuilt (its policy changed)
            assert daemon.lifecycle_tick() == 0
            await quiet(daemon)
            assert daemon.lifecycle_tick() == 0
            assert daemon.store.alerts.firing() == 1
    assert runs(rx) == ["run_1"] and len(rx.requests) == 1


async def test_a_rotated_secret_file_rebuilds_its_channel_and_an_unchanged_config_rebuilds_nothing(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    nowhere = "http://127.0.0.1:9"
    (tmp_path / "hook.secret").write_text(SECRET + "\n")
    body = f"state_dir: {tmp_path / 'state'}\nchannels:\n"
    body += f"  a: {{webhook: {{url: '{nowhere}/a', secret_file: hook.secret}}}}\n"
    body += f"  b: {{webhook: {{url: '{nowhere}/b', secret: {SECRET}}}}}\n"
    cfg = write_config(tmp_path, body, "rules:\n  - {name: r, match: {kind: run.status}, notify: [a, b]}\n")
    daemon = Daemon(load_config(cfg))
    workers = dict(daemon.deliverer.workers)
    assert daemon.reload()
    assert daemon.deliverer.workers == workers  # nothing changed: nothing restarted
    rotated = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3"
    (tmp_path / "hook.secret").write_text(rotated + "\n")
    assert daemon.reload()
    assert daemon.deliverer.workers["a"] is not workers["a"]
    assert daemon.deliverer.workers["b"] is workers["b"]
    logs = log_lines.getvalue()
    assert re.search(r"event=reload\.applied channels_rebuilt=a$", logs, re.M)
    assert rotated not in logs and SECRET not in logs
    await daemon.pollers.aclose()
    daemon.store.close()


async def test_a_reload_applies_log_level_and_names_log_format_as_needing_a_restart(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    body = f"state_dir: {tmp_path / 'state'}\nlog_level: warning\nchannels:\n  a: {{apprise: 'json://127.0.0.1:9/a'}}\n"
    cfg = write_config(tmp_path, body, "rules: []\n")
    daemon = Daemon(load_config(cfg))
    try:
        assert daemon.reload()
        assert logging.getLogger("runwatch").level == logging.WARNING
        cfg.write_text(body.replace("log_level: warning", "log_level: debug\nlog_format: json"))
        assert daemon.reload()
        assert logging.getLogger("runwatch").level == logging.DEBUG
        assert re.search(r"event=reload\.needs_restart sections=log_format ", log_lines.getvalue())
    finally:
        logging.getLogger("runwatch").setLevel(logging.INFO)
        await daemon.pollers.aclose()
        daemon.store.close()
