"""Reload: a good rule file replaces the rules; a broken one keeps the running rules and says why."""

from __future__ import annotations

import io
from pathlib import Path

from runwatch.config import load_config
from runwatch.service.app import Daemon
from tests.conftest import write_config

CONFIG = "state_dir: state\nchannels:\n  ops: {apprise: 'json://127.0.0.1:9/x'}\n"
ONE = "rules:\n  - {name: a, match: {provider: exa}, notify: [ops]}\n"
TWO = ONE + "  - {name: b, match: {provider: olostep}, notify: [ops]}\n"


def test_reload_swaps_good_rules_and_keeps_them_on_a_broken_file(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    daemon = Daemon(load_config(write_config(tmp_path, CONFIG, ONE)))
    rules_file = tmp_path / "rules" / "main.yaml"
    rules_file.write_text(TWO)
    assert daemon.reload()
    assert [r.name for r in daemon.ruleset.rules] == ["a", "b"]

    rules_file.write_text(TWO.replace("provider: olostep", "provider: olostepp"))
    assert not daemon.reload()
    assert [r.name for r in daemon.ruleset.rules] == ["a", "b"]
    assert (
        daemon.metrics.registry.get_sample_value("runwatch_config_reloads_total", {"outcome": "failure"}) == 1
    )
    assert daemon.metrics.registry.get_sample_value("runwatch_rules_loaded") == 2
    assert "rules/main.yaml:3: rules[1].match.provider" in log_lines.getvalue()
    daemon.store.close()
