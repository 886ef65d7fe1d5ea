"""Silences: from the config (fixed and recurring windows) and from the CLI beside a running daemon."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.delivery import Deliverer
from runwatch.delivery.policy import ChannelPolicy
from runwatch.delivery.webhook import WebhookChannel
from runwatch.metrics import Metrics
from runwatch.pipeline.silences import Muter, SilenceSpec
from runwatch.store import Location, Notification, State, open_shared, open_state
from runwatch.yamlfile import FileProblems
from tests.conftest import make_alert, write_config
from tests.webhook_server import webhook_server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_fixed_window_and_a_maintenance_window_across_dst() -> None:
    fixed = SilenceSpec.model_validate(
        {
            "matchers": {"provider": "exa"},
            "starts_at": "2026-03-01T10:00:00Z",
            "ends_at": "2026-03-01T12:00:00Z",
        }
    )
    assert not fixed.active(ts("2026-03-01T09:59:59+00:00"))
    assert fixed.active(ts("2026-03-01T10:00:00+00:00")) and fixed.active(ts("2026-03-01T11:59:00+00:00"))
    assert not fixed.active(ts("2026-03-01T12:00:00+00:00"))
    nightly = SilenceSpec.model_validate(
        {"matchers": {"monitor_id": "monitor_prod_*"}, "cron": "30 1 * * *", "duration": "1h",
         "timezone": "Europe/Berlin"}
    )  # fmt: skip
    # 01:30-02:30 Berlin time: 00:30 UTC in winter, 23:30 UTC the day before in summer.
    assert nightly.active(ts("2026-03-28T00:45:00+00:00"))  # Saturday, still CET
    assert not nightly.active(ts("2026-03-28T01:31:00+00:00"))
    # Clocks go forward on Sunday 29 March 2026 at 01:00 UTC; on Monday 01:30 is 23:30 UTC on Sunday.
    assert nightly.active(ts("2026-03-29T23:45:00+00:00"))  # Monday 01:45 CEST
    assert not nightly.active(ts("2026-03-30T00:45:00+00:00"))  # 02:45 CEST: over
    assert not nightly.active(ts("2026-03-29T22:45:00+00:00"))  # Monday 00:45 CEST: not yet


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("{matchers: {provider: exa}}", "needs ends_at"),
        ("{matchers: {provider: exa}, cron: '0 2 * * *'}", "needs both cron and duration"),
        ("{matchers: {provider: exa}, cron: 'at two', duration: 1h}", "is not a cron expression"),
        (
            "{matchers: {provider: exa}, cron: '0 2 * * *', duration: 1h, timezone: Mars/Base}",
            "not a time zone",
        ),
        ("{matchers: {}, ends_at: '2026-01-01T00:00:00Z'}", "at least 1"),
        (
            "{matchers: {provider: exa}, starts_at: '2026-01-02T00:00:00Z', ends_at: '2026-01-01T00:00:00Z'}",
            "never be active",
        ),
    ],
)
def test_check_names_the_line_of_a_silence_that_cannot_work(tmp_path: Path, block: str, problem: str) -> None:
    cfg = write_config(tmp_path, f"rule_files: []\nsilences:\n  - {block}\n", "rules: []\n")
    with pytest.raises(FileProblems) as info:
        load_config(cfg)
    [p] = info.value.problems
    assert (p.line, p.field.split(".")[0]) == (3, "silences[0]" if "[" in p.field else "silences")
    assert problem in p.message


def test_spec_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        SilenceSpec.model_validate({"matchers": {"a": "b"}, "ends_at": "2026-01-01T00:00:00Z", "until": 1})


@pytest.mark.anyio
async def test_a_matching_notification_is_silenced_the_rest_delivered(tmp_path: Path) -> None:
    clock = ManualClock(ts("2026-03-01T11:00:00+00:00"))
    state = State(tmp_path)
    silence = SilenceSpec.model_validate(
        {
            "matchers": {"run_id": "run_1", "channel": "hook"},
            "ends_at": "2026-03-01T12:00:00Z",
            "comment": "deploy",
        }
    )
    metrics = Metrics()
    async with webhook_server(SECRET) as rx:
        channel = WebhookChannel("hook", rx.url, [SECRET])
        d = Deliverer(
            state.outbox, state.sends, {"hook": channel}, {"hook": ChannelPolicy()}, metrics, clock,
            muter=Muter([silence], state.silences),
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            tg.start_soon(d.run)
            state.record(
                "exa", [], [Notification(make_alert(n, channel="hook")) for n in (1, 2)], clock.now()
            )
            d.wake()
            await rx.wait_for(1)
            with anyio.fail_after(10):
                while not metrics.registry.get_sample_value(
                    "runwatch_notifications_silenced_total", {"channel": "hook"}
                ):
                    await d.workers["hook"].wait_progress()
            tg.cancel_scope.cancel()
    assert [r.payload["run_id"] for r in rx.delivered() if r.payload] == ["run_2"]
    items = {i.state: i for i in state.outbox.items(state=None, channel=None, limit=None)}
    assert items["silenced"].last_error == "silenced: config silence #1 (deploy)"
    state.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runwatch", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_silence_add_list_expire_from_the_cli(tmp_path: Path, state_url: str | None) -> None:
    cfg = write_config(
        tmp_path,
        f"state_dir: {tmp_path / 'state'}\nrule_files: []\n"
        + (f"state: {{url: '{state_url}'}}\n" if state_url else "")
        + "silences:\n"
        + "  - {matchers: {provider: olostep}, cron: '0 3 * * 0', duration: 2h, comment: weekly}\n",
        "rules: []\n",
    )
    where = Location(tmp_path / "state", state_url)
    open_state(where).close()
    match = ["--match", "provider=exa", "--match", "monitor_id=monitor_prod_*"]
    added = cli("silence", "add", *match, "--for", "2h", "--comment", "deploy", "--created-by", "ana",
                "--config", str(cfg))  # fmt: skip
    assert added.returncode == 0, added.stderr
    sid = added.stdout.strip()
    assert sid.startswith("sil_")
    listed = cli("silence", "list", "--config", str(cfg))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(
        line.startswith("config#1") and "provider=olostep" in line and "weekly" in line for line in lines
    )
    [mine] = [line for line in lines if line.startswith(sid)]
    assert "active" in mine and "provider=exa,monitor_id=monitor_prod_*" in mine and "deploy (ana)" in mine
    shared = open_shared(where)
    store = shared.silences
    alert = dataclasses.replace(make_alert(1), monitor_id="monitor_prod_a")
    assert Muter([], store).silenced_by(alert, _now()) == f"silence {sid} (deploy)"
    assert Muter([], store).silenced_by(dataclasses.replace(alert, provider="olostep"), _now()) is None
    assert cli("silence", "expire", sid, "--config", str(cfg)).returncode == 0
    again = cli("silence", "expire", sid, "--config", str(cfg))
    assert again.returncode == 1 and "no active silence" in again.stderr
    assert Muter([], store).silenced_by(alert, _now()) is None
    shared.close()
    bad = cli("silence", "add", "--match", "nolabel", "--for", "1h", "--config", str(cfg))
    assert bad.returncode == 2 and "label=glob" in bad.stderr


def _now() -> float:
    return datetime.now(UTC).timestamp()


UNSILENCE_RULES = """
rules:
  - name: failed-open
    match: {kind: run.status, to: failed}
    notify: [hook]
    send_resolved: true
  - name: failed-once
    match: {kind: run.status, to: failed}
    notify: [hook]
"""


@pytest.mark.anyio
async def test_an_alert_still_open_when_its_silence_ends_is_sent_then_once(tmp_path: Path) -> None:
    """A lifecycle alert silenced when it fired is sent when the silence ends (it is still open);
    the one-off notification of the same failure, and an alert that resolved while silenced, are not."""
    from runwatch.config import load_config
    from runwatch.model import RunSnapshot
    from runwatch.service.app import Daemon
    from runwatch.sources.base import MonitorBatch
    from tests.conftest import write_config

    clock = ManualClock(ts("2026-03-01T11:00:00+00:00"))
    async with webhook_server(SECRET) as rx:
        cfg = write_config(
            tmp_path,
            f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\n"
            f"channels:\n  hook:\n    webhook: {{url: '{rx.url}', secret: '{SECRET}'}}\n",
            UNSILENCE_RULES,
        )
        daemon = Daemon(load_config(cfg), clock=clock)
        daemon.detect.provider_settled("exa")
        metrics = daemon.metrics.registry

        def count(name: str) -> float:
            return metrics.get_sample_value(name, {"channel": "hook"}) or 0.0

        async def see(monitor: str, run_id: str, status: str) -> None:
            snap = RunSnapshot("exa", monitor, run_id, status, {"id": run_id, "status": status})
            await daemon.pipeline(MonitorBatch("exa", monitor, [snap]))

        silence = daemon.store.silences.add(
            {"provider": "exa"}, clock.now(), clock.now() + 3600, "deploy", "t"
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.deliverer.run)
            await see("m1", "r1", "running")
            await see("m2", "r2", "running")
            await see("m1", "r1", "failed")  # stays open
            await see("m2", "r2", "failed")  # resolves below, while silenced
            daemon.deliverer.wake()
            with anyio.fail_after(10):
                while count("runwatch_notifications_silenced_total") < 4:
                    await daemon.deliverer.workers["hook"].wait_progress()
            await see("m2", "r3", "running")
            await see("m2", "r3", "completed")
            daemon.deliverer.wake()
            with anyio.fail_after(10):
                while count("runwatch_notifications_silenced_total") < 5:  # the resolved one too
                    await daemon.deliverer.workers["hook"].wait_progress()
            clock.advance(600)
            daemon.lifecycle_tick()  # the silence still holds: nothing moves
            assert count("runwatch_notifications_unsilenced_total") == 0
            assert daemon.store.silences.expire(silence.id, clock.now())
            clock.advance(10)  # past the muter's refresh of the CLI's silences
            daemon.lifecycle_tick()
            await rx.wait_for(1)
            daemon.lifecycle_tick()  # and only once
            clock.advance(10)
            daemon.lifecycle_tick()
            await daemon.deliverer.drain(5)
            tg.cancel_scope.cancel()
        got = [
            (r.payload["rule"], r.payload["run_id"], r.payload["status"]) for r in rx.delivered() if r.payload
        ]
        assert got == [("failed-open", "r1", "firing")]
        assert count("runwatch_notifications_unsilenced_total") == 1
        daemon.store.close()
