"""``runwatch reload`` (and SIGHUP): the running daemon re-reads config and rules and applies them;
what still needs a restart (the state) is named, a broken file keeps what runs; with no daemon running
it says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import write_config
from tests.service.test_observability import Lines

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
