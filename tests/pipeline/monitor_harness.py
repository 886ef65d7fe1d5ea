"""A real daemon against one fake provider on a ManualClock, for the monitor-level kinds' tests
(``monitor.status``, ``monitor.missed_run``): the config, the daemon's life, what it queued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.fakes import RunningFake
from runwatch.model import Alert
from runwatch.service.app import Daemon
from tests.conftest import write_config
from tests.test_end_to_end import EXA_KEY, FAST, OLOSTEP_KEY


def queued(daemon: Daemon) -> list[Alert]:
    """Every notification the daemon queued, oldest first."""
    rows = daemon.store.db.execute("SELECT alert FROM notifications ORDER BY seq").fetchall()
    return [Alert.from_payload(json.loads(r[0])) for r in rows]


def config(
    tmp_path: Path, provider: str, fake: RunningFake[Any], rules: str, channels: Sequence[str]
) -> Path:
    """poll_interval 10 s, idle_poll_interval 60 s; json:// channels that go nowhere (nothing is sent:
    the tests read the outbox)."""
    key = EXA_KEY if provider == "exa" else OLOSTEP_KEY
    chans = "".join(f'  {c}: {{apprise: "json://127.0.0.1:9/{c}"}}\n' for c in channels)
    return write_config(
        tmp_path,
        f"""
state_dir: {tmp_path / "state"}
metrics_listen: 127.0.0.1:0
providers:
  {provider}: {{base_url: "{fake.base_url}", api_key: {key}, poll_interval: 10s,
    idle_poll_interval: 60s, retries: 0}}
channels:
{chans}""",
        rules,
    )


@asynccontextmanager
async def daemon_for(cfg: Path, clock: ManualClock) -> AsyncIterator[Daemon]:
    """A Daemon (not running its loops: the test polls and ticks), closed like a stopped one."""
    daemon = Daemon(load_config(cfg), clock=clock, client_options=FAST)
    try:
        yield daemon
    finally:
        for source in daemon.sources.values():
            await source.aclose()
        daemon.store.close()
