"""``runwatch reload`` (and SIGHUP): the running daemon re-reads config and rules and applies them;
what still needs a restart (the state) is named, a broken file keeps what runs; with no daemon running
it says so. The command waits for the daemon's answer and exits with it, so ``systemctl reload`` (whose
``ExecReload=`` it is) fails when runwatch refused the new config."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwatch.service.reload_outcome import ReloadOutcome, wait
from tests.conftest import write_config
from tests.service.test_observability import Lines
from tests.tools import free_port

RULE = "  - {{name: {name}, match: {{kind: run.status, to: failed}}, notify: [ch]}}\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runwatch", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_reload_takes_new_rules_names_what_needs_a_restart_and_keeps_the_last_good(
    tmp_path: Path, state_url: str | None
) -> None:
    """On either store: the daemon holds its state_dir's lock (with PostgreSQL too), where reload finds it."""

    def state(*keys: str) -> str:
        keys = (f"url: '{state_url}'", *keys) if state_url else keys
        return f"state: {{{', '.join(keys)}}}\n" if keys else ""

    body = f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:0\n"
    body += "channels:\n  ch: {apprise: 'json://127.0.0.1:9/ch'}\n"
    cfg = write_config(tmp_path, body + state(), "rules:\n" + RULE.format(name="a"))
    assert (
        cli("reload", "--config", str(cfg))
        .stderr.strip()
        .endswith("no runwatch is running on " + str(tmp_path / "state"))
    )
    with subprocess.Popen(
        [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        out = Lines(proc).start()
        try:
            out.wait("runwatch.started", 30)
            (tmp_path / "rules" / "main.yaml").write_text(
                "rules:\n" + RULE.format(name="a") + RULE.format(name="b")
            )
            cfg.write_text(body + "delivery: {max_attempts: 3}\n" + state("keep_finished: 1d"))
            done = cli("reload", "--config", str(cfg))
            assert done.returncode == 0, done.stderr
            assert f"pid {proc.pid}" in done.stdout
            out.wait(r"reload\.ok .*rules=2", 30)
            out.wait(r"reload\.needs_restart .*sections=state ", 30)  # only state: delivery is applied
            out.wait(r"reload\.applied .*channels_rebuilt=ch", 30)
            (tmp_path / "rules" / "main.yaml").write_text(
                "rules:\n  - {name: c, match: {kind: nope}, notify: [ch]}\n"
            )
            bad = cli("reload", "--config", str(cfg))
            assert bad.returncode == 1 and "rules[0].match.kind" in bad.stdout  # check says why; nothing sent
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    assert found, name
    return float(found.group(1))


def by_hand(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command typed on the host: no $CREDENTIALS_DIRECTORY (only the service has one)."""
    base = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM")}
    return subprocess.run(
        [sys.executable, "-m", "runwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path, int, Lines, subprocess.Popen[str]]]:
    """A running daemon as the unit runs it: its channel's URL is a credential only it can read."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "ops_apprise_url").write_text("json://127.0.0.1:9/ops\n")
    port = free_port()
    body = f"state_dir: {tmp_path / 'state'}\nmetrics_listen: 127.0.0.1:{port}\nchannels:\n  ops: {{}}\n"
    cfg = write_config(tmp_path, body, "rules:\n" + RULE.format(name="a").replace("[ch]", "[ops]"))
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with subprocess.Popen(
        [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "CREDENTIALS_DIRECTORY": str(creds)},
    ) as proc:
        out = Lines(proc).start()
        try:
            out.wait("runwatch.started", 30)
            yield cfg, creds, port, out, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            assert proc.wait(timeout=20) == 0


def test_a_reload_the_daemon_refuses_fails_with_its_lines_and_keeps_what_runs(
    service: tuple[Path, Path, int, Lines, subprocess.Popen[str]],
) -> None:
    """The check by hand cannot see the credentials, so it passes what only the daemon can refuse: a
    webhook whose secret is a credential nobody created. The daemon's answer is the command's: exit 1
    with the daemon's ``file:line: field: problem`` line, as ``ExecReload=`` gives it to systemctl."""
    cfg, creds, port, out, proc = service
    rules = cfg.parent / "rules" / "main.yaml"
    rules.write_text("rules:\n" + "".join(RULE.format(name=n).replace("[ch]", "[ops]") for n in "ab"))
    cfg.write_text(cfg.read_text().replace("ops: {}", "ops: {webhook: {url: 'http://127.0.0.1:9/hook'}}"))
    refused = by_hand("reload", "--config", str(cfg))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    warning = (
        f"warning: {cfg}:4: channels.ops: uses the credential ops_webhook_secret, which only the service"
    )
    assert warning in refused.stderr  # the check by hand, which passed
    assert f"{cfg}:4: channels.ops.webhook.secret: no secret:" in refused.stdout  # the daemon's verdict
    assert (
        f"runwatch pid {proc.pid} refused the new config and keeps running the one it had" in refused.stderr
    )
    out.wait(r"reload\.failed .*kept_rules=1", 30)
    assert proc.poll() is None
    assert metric(port, "runwatch_rules_loaded") == 1.0  # the old rules, not the two of the new file
    assert metric(port, "runwatch_config_last_reload_successful") == 0.0

    # As ExecReload= runs it, with the service's credentials: the check itself refuses; nothing is sent.
    as_unit = by_hand("reload", "--config", str(cfg), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert as_unit.returncode == 1 and f"{cfg}:4: channels.ops.webhook.secret: no secret" in as_unit.stdout

    (creds / "ops_webhook_secret").write_text("whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
    taken = by_hand("reload", "--config", str(cfg))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert f"reload: runwatch pid {proc.pid} took the new config (2 rules)" in taken.stdout
    assert metric(port, "runwatch_rules_loaded") == 2.0


def test_a_daemon_that_does_not_answer_fails_the_reload_in_bounded_time(
    service: tuple[Path, Path, int, Lines, subprocess.Popen[str]],
) -> None:
    cfg, _creds, _port, out, proc = service
    proc.send_signal(signal.SIGSTOP)  # a wedged event loop, as far as the command can tell
    try:
        began = time.monotonic()
        late = by_hand("reload", "--config", str(cfg), "--timeout", "1s")
        waited = time.monotonic() - began
    finally:
        proc.send_signal(signal.SIGCONT)
    assert late.returncode == 1
    assert f"runwatch: runwatch pid {proc.pid} did not answer within 1 s; its log says why" in late.stderr
    assert 1.0 <= waited < 20
    out.wait(r"reload\.ok", 30)  # it takes the signal once it runs again


def test_an_outcome_older_than_the_signal_is_not_the_answer(tmp_path: Path) -> None:
    """A reload that began before this command signalled read older files: its outcome is not taken."""
    ReloadOutcome(began=1_000, pid=os.getpid(), ok=True, rules=3).write(tmp_path)
    assert wait(tmp_path, os.getpid(), since=2_000, timeout=0) is None
    assert wait(tmp_path, os.getpid() + 1, since=0, timeout=0) is None  # another daemon's
    found = wait(tmp_path, os.getpid(), since=1_000, timeout=0)
    assert found is not None and found.ok and found.rules == 3
