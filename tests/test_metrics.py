"""Series that exist at 0 from the start (so an ``increase()`` alert sees the first error), and the
reload gauge the RunwatchReloadFailed alert reads. On a fresh registry, read with get_sample_value."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from runwatch.config import load_config
from runwatch.metrics import POLL_ERROR_REASONS, Metrics
from runwatch.service.app import Daemon
from tests.conftest import write_config

CONFIG = """
state_dir: state
providers:
  exa: {api_key: k, base_url: "http://127.0.0.1:9"}
channels:
  ops: {apprise: 'json://127.0.0.1:9/x'}
"""
ONE = "rules:\n  - {name: a, match: {provider: exa}, notify: [ops]}\n"
TWO = ONE + "  - {name: b, match: {provider: olostep}, notify: [ops]}\n"


def test_known_series_start_at_zero_for_enabled_providers_and_configured_channels(tmp_path: Path) -> None:
    daemon = Daemon(load_config(write_config(tmp_path, CONFIG, ONE)))
    value = daemon.metrics.registry.get_sample_value
    try:
        for reason in POLL_ERROR_REASONS:
            assert value("runwatch_poll_errors_total", {"provider": "exa", "reason": reason}) == 0
        # olostep has no key: it is off, and no series pretends otherwise.
        assert value("runwatch_poll_errors_total", {"provider": "olostep", "reason": "auth"}) is None
        assert value("runwatch_notifications_dead_total", {"channel": "ops"}) == 0
        for outcome in ("delivered", "retry", "permanent", "expired"):
            assert value("runwatch_delivery_attempts_total", {"channel": "ops", "outcome": outcome}) == 0
        for state in ("pending", "sent", "dead"):
            assert value("runwatch_outbox_notifications", {"channel": "ops", "state": state}) == 0
        assert value("runwatch_rule_matches_total", {"rule": "a"}) == 0
        assert value("runwatch_config_reloads_total", {"outcome": "failure"}) == 0
        assert value("runwatch_config_last_reload_successful") == 1
        assert b"_created" not in generate_latest(daemon.metrics.registry)
        # Leadership: with SQLite the one instance polls exa from the start; olostep is nobody's.
        assert value("runwatch_leader", {"provider": "exa"}) == 1
        assert value("runwatch_leader_changes_total", {"provider": "exa"}) == 1
        assert value("runwatch_leader", {"provider": "olostep"}) is None
        assert value("runwatch_config_mismatch") == 0
    finally:
        daemon.store.close()


def test_a_reload_primes_new_rules_and_a_refused_one_sets_the_gauge_to_0(tmp_path: Path) -> None:
    daemon = Daemon(load_config(write_config(tmp_path, CONFIG, ONE)))
    value = daemon.metrics.registry.get_sample_value
    rules_file = tmp_path / "rules" / "main.yaml"
    try:
        rules_file.write_text(TWO)
        assert daemon.reload()
        assert value("runwatch_rule_matches_total", {"rule": "b"}) == 0
        rules_file.write_text("rules: [")
        assert not daemon.reload()
        assert value("runwatch_config_last_reload_successful") == 0
        rules_file.write_text(ONE)
        assert daemon.reload()
        assert value("runwatch_config_last_reload_successful") == 1
    finally:
        daemon.store.close()


def test_build_info_carries_the_version() -> None:
    import runwatch

    m = Metrics()
    labels = {"version": runwatch.__version__}
    samples = [s for f in m.registry.collect() if f.name == "runwatch_build" for s in f.samples]
    assert samples and all(labels.items() <= s.labels.items() for s in samples)
