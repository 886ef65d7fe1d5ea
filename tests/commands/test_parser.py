"""The command line as a user runs it: a real subprocess of ``python -m runwatch``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import runwatch
from tests.conftest import write_config

RUN = [sys.executable, "-m", "runwatch"]


def runwatch_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_version_and_help() -> None:
    out = runwatch_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"runwatch {runwatch.__version__}"
    helped = runwatch_cli("--help")
    assert helped.returncode == 0
    for command in ("run", "check", "demo", "fake"):
        assert command in helped.stdout


GOOD_RULES = """
rules:
  - name: exa-run-failed
    match: {provider: exa, kind: run.status, to: failed}
    severity: critical
    notify: [ops-slack]
"""

CONFIG = """
providers:
  exa: {api_key: sk-exa-secret-key-42}
channels:
  ops-slack: {apprise: "slack://TokenAAAAAAA/TokenBBBBBBB/TokenCCCCCCCCCCCCCCC/#ops"}
  ops-mail: {apprise: "mailto://user:Secr3tPassw0rd@smtp.example.com?to=oncall@example.com"}
"""


def test_check_accepts_a_valid_config_with_one_summary_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG, GOOD_RULES)
    out = runwatch_cli("check", "--config", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "1 rules in 1 files" in lines[0] and "2 channels" in lines[0] and "exa" in lines[0]


def test_check_names_file_line_and_field_of_every_problem(tmp_path: Path) -> None:
    bad = """rules:
  - name: ok
    match: {provider: exa}
    notify: [ops-slack]
  - name: typo
    match:
      kind: run.status
      to: faild
    notify: [ops-pager]
"""
    cfg = write_config(tmp_path, CONFIG, bad)
    (tmp_path / "rules" / "other.yaml").write_text(
        "rules:\n  - name: x\n    notify: [ops-slack]\n    sevrity: info\n"
    )
    out = runwatch_cli("check", "--config", str(cfg))
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert "rules/main.yaml:8: rules[1].match.to: 'faild' is not a run or monitor status" in lines
    assert any(
        line.startswith("rules/main.yaml:9: rules[1].notify") and "ops-pager" in line for line in lines
    )
    assert any(line.startswith("rules/other.yaml:4: rules[0].sevrity: unknown key") for line in lines)
    for secret in ("sk-exa-secret-key-42", "Secr3tPassw0rd", "TokenCCCCCCCCCCCCCCC"):
        assert secret not in out.stdout + out.stderr


def test_run_with_a_broken_config_starts_nothing_and_exits_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "providers:\n  exa:\n    poll_interval: sometimes\n", GOOD_RULES)
    out = runwatch_cli("run", "--config", str(cfg))
    assert out.returncode == 1
    assert f"{cfg}:3: providers.exa.poll_interval:" in out.stderr


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM: finish, exit 0. Readiness is awaited on the log line the daemon prints when it starts."""
    cfg = write_config(tmp_path, "metrics_listen: 127.0.0.1:0\nstate_dir: state\n", "rules: []\n")
    env = {k: v for k, v in os.environ.items() if k not in ("EXA_API_KEY", "OLOSTEP_API_KEY")}
    proc = subprocess.Popen([*RUN, "run", "--config", str(cfg)], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "runwatch.started" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(seen) + rest
    assert "event=provider.off provider=exa" in "".join(seen)
    assert "runwatch.stopped" in rest


@pytest.mark.timeout(90)
def test_demo_runs_the_whole_pipeline_and_ends_by_itself() -> None:
    out = runwatch_cli("demo", "--metrics-listen", "127.0.0.1:0", timeout=80)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Quota exceeded" in out.stdout
    assert "run_complete" in out.stdout
    assert "Summary" in out.stdout
    assert "ops-mail   2 sent" in out.stdout
    # With push on: the fakes' webhooks reached the daemon, and Olostep's steps came by live log.
    pushed = {p: int(n) for p, n in re.findall(r"(exa|olostep) +(\d+) pushes accepted", out.stdout)}
    assert pushed["exa"] >= 1 and pushed["olostep"] >= 1, out.stdout
    streamed = re.search(r"(\d+) steps came by live-log stream", out.stdout)
    assert streamed and int(streamed.group(1)) >= 1, out.stdout


def test_help_lists_the_operator_commands_with_one_line_each() -> None:
    helped = runwatch_cli("--help")
    assert helped.returncode == 0
    listed = " ".join(helped.stdout.split())
    assert "outbox list, replay or purge notifications in the state" in listed
    assert "send-test send a sample notification through one channel now" in listed
    outbox = runwatch_cli("outbox", "--help")
    assert outbox.returncode == 0
    for action in ("list", "replay", "purge"):
        assert f"    {action} " in outbox.stdout
    replay = runwatch_cli("outbox", "replay", "--help")
    assert "--dead" in replay.stdout and "--channel" in replay.stdout and "--config" in replay.stdout
