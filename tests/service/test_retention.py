"""Retention on an injected clock: finished notifications and finished runs age out, nothing else."""

from __future__ import annotations

from pathlib import Path

from runwatch.clock import ManualClock
from runwatch.config import load_config
from runwatch.model import RunSnapshot
from runwatch.service.app import Daemon
from runwatch.service.retention import Retention
from runwatch.store import Notification, State
from runwatch.store.interfaces import MonitorRecord
from tests.conftest import make_alert, write_config

T0 = 1_780_000_000.0


def snap(run_id: str, status: str) -> RunSnapshot:
    return RunSnapshot("exa", "m1", run_id, status, {"id": run_id, "status": status})


def test_sent_and_dead_rows_and_finished_runs_age_out(tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path,
            f"state_dir: {tmp_path / 'state'}\nrule_files: []\n"
            "delivery: {keep: 30s}\nstate: {keep_finished: 60s}\n",
            "rules: []\n",
        )
    )
    clock = ManualClock(T0)
    state = State(cfg.state_dir)
    state.record("exa", [snap("done", "failed"), snap("live", "running")], [], T0)
    monitors = [MonitorRecord("exa", "gone", "deleted", {}), MonitorRecord("exa", "kept", "enabled", {})]
    state.record("exa", [], [], T0, monitor_updates=monitors)
    state.record("exa", [], [Notification(make_alert(i)) for i in range(3)], T0)
    out = state.outbox
    sent, dead, pending = out.claim("ch", T0, 10, "me", 600)
    out.delivered(sent.seq, T0)
    out.dead(dead.seq, "http_4xx: HTTP 410", T0)
    out.release([pending.seq])
    retention = Retention(state, cfg.settings, clock)

    clock.advance(29)
    assert retention.run_once() is None
    assert out.counts() == {("ch", "sent"): 1, ("ch", "dead"): 1, ("ch", "pending"): 1}

    clock.advance(2)  # 31 s: finished notifications go, the pending one stays whatever its age
    assert retention.run_once() is None
    assert out.counts() == {("ch", "pending"): 1}
    assert state.runs.run("exa", "done") is not None

    clock.advance(30)  # 61 s: the finished run goes, the running one stays
    horizon = retention.run_once()
    assert horizon == T0 + 61 - 60
    assert state.runs.run("exa", "done") is None and state.runs.run("exa", "live") is not None
    # A monitor deleted that long ago is forgotten too; a live one is kept.
    assert state.monitors.get("exa", "gone") is None and state.monitors.get("exa", "kept") is not None
    assert state.runs.listed_monitors("exa") == ["kept"]
    state.close()
    reopened = State(cfg.state_dir)
    assert [r.monitor_id for r in reopened.monitors.records()] == ["kept"]
    reopened.close()

    # A forgotten run is not news if a listing shows it again: the daemon ignores runs from before
    # the horizon, as it does runs from before its first start.
    daemon = Daemon(cfg, clock=clock)
    assert daemon.not_before >= horizon
    daemon.store.close()
