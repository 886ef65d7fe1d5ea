"""``kill -9`` at many points while notifications are pending: none lost, duplicates only in the window.

A real daemon process delivers a queue of webhook notifications to a real receiver; the test kills it
(SIGKILL) each time the receiver has seen a few more requests, restarts it, and in the end counts every
notification at the receiver by its ``webhook-id``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from runwatch.store import Notification, State
from tests.conftest import make_alert
from tests.webhook_server import webhook_server

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
N = 120


def start(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_kill_9_loses_nothing_and_repeats_only_what_was_unacknowledged(tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    alerts = [make_alert(i, channel="hook") for i in range(N)]
    state.record("exa", [], [Notification(a) for a in alerts], 1.0)
    state.close()
    async with webhook_server(SECRET) as rx:
        cfg = tmp_path / "runwatch.yaml"
        cfg.write_text(
            f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\nrule_files: []\n"
            f"channels:\n  hook:\n    webhook: {{url: '{rx.url}', secret: '{SECRET}'}}\n"
            "delivery: {retry_initial: 50ms, retry_max: 100ms, max_age: 100000d}\n"
        )
        kills = 0
        for seen in (1, 5, 17, 30, 52, 80, 101):
            proc = start(cfg)
            try:
                await rx.wait_for(seen, delivered=False, timeout=30)
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            kills += 1
        proc = start(cfg)
        try:
            with anyio.fail_after(30):
                while {r.id for r in rx.delivered()} != {a.id for a in alerts}:
                    await rx.wait_for(len(rx.requests) + 1, delivered=False)
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0
    counts = Counter(r.id for r in rx.requests)
    assert set(counts) == {a.id for a in alerts}  # none missing, nothing unknown
    assert all(r.error is None for r in rx.requests)  # every request verifies
    duplicates = sum(c - 1 for c in counts.values())
    # Each kill can land between the receiver's answer and the state's record of it: at most one
    # notification per kill (one channel, concurrency 1) is sent again. Receivers dedupe on webhook-id.
    assert duplicates <= kills, counts.most_common(5)
    final = State(tmp_path / "state")
    assert final.outbox.counts() == {("hook", "sent"): N}  # and the state knows each was sent
    final.close()
    print(f"kills={kills} requests={len(rx.requests)} duplicates={duplicates}")
