"""What the commands print, as journald files it: under systemd, stdout and stderr are one stream to the
journal (``$JOURNAL_STREAM`` = its dev:inode), and a line without a ``<N>`` prefix is logged at info, so
``journalctl -p warning`` would hide why a start or a reload failed. Here the stream is a real pipe and
``$JOURNAL_STREAM`` names it, as systemd does; the same commands on any other stream print exactly what
they always did."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.conftest import write_config
from tests.tools import RUNWATCH

CHANNELS = "channels:\n  ops: {apprise: 'json://127.0.0.1:9/ops'}\n"
GOOD_RULES = "rules:\n  - {name: failed, match: {kind: run.status, to: failed}, notify: [ops]}\n"
STREAMS = ("journal", "stale", "none")
BAD_RULES = "rules:\n  - {name: typo, match: {kind: run.status, to: faild}, notify: [pager]}\n"


def run(args: list[str], stream: str) -> tuple[int, list[str]]:
    """``args`` with stdout and stderr on one pipe; ``stream``: ``journal`` ($JOURNAL_STREAM names that
    pipe), ``stale`` (it names another stream, as after a redirection) or ``none`` (not set)."""
    read_fd, write_fd = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "CREDENTIALS_DIRECTORY")}
    if stream != "none":
        other_r, other_w = os.pipe()
        st = os.fstat(write_fd if stream == "journal" else other_w)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        os.close(other_r)
        os.close(other_w)
    try:
        done = subprocess.run(args, stdout=write_fd, stderr=write_fd, env=env, timeout=60, check=False)
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as out:
        return done.returncode, out.read().splitlines()


def unprefixed(lines: list[str]) -> list[str]:
    return [line[3:] if line[:1] == "<" and line[2:3] == ">" else line for line in lines]


def test_check_problems_are_errors_in_the_journal_and_unchanged_elsewhere(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "state_dir: state\n" + CHANNELS, BAD_RULES)
    runs = {stream: run([*RUNWATCH, "check", "--config", str(cfg)], stream) for stream in STREAMS}
    code, lines = runs["journal"]
    assert code == 1 and len(lines) == 2  # the status typo and the unknown channel
    assert all(line.startswith("<3>rules/main.yaml:2: rules[0].") for line in lines), lines
    for stream in ("stale", "none"):  # a terminal, a file, a pipe: unchanged
        assert runs[stream] == (1, unprefixed(lines)), stream


def test_check_warnings_are_warnings_and_the_summary_is_info(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "state_dir: state\n" + CHANNELS, GOOD_RULES)  # no provider key
    runs = {stream: run([*RUNWATCH, "check", "--config", str(cfg)], stream) for stream in STREAMS}
    code, lines = runs["journal"]
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"<4>warning: {cfg}: providers: no provider has an API key")
    assert lines[1].startswith(f"<6>OK: {cfg}: ")
    for stream in ("stale", "none"):
        assert runs[stream] == (0, unprefixed(lines)), stream


def test_run_refusing_its_config_says_why_at_priority_error(tmp_path: Path) -> None:
    """What step 5 of the install guide shows with ``journalctl -p warning`` after a failed start."""
    cfg = write_config(tmp_path, "state_dir: state\nmetrics_listen: 127.0.0.1:0\n" + CHANNELS, BAD_RULES)
    code, lines = run([*RUNWATCH, "run", "--config", str(cfg)], "journal")
    assert code == 1
    assert len(lines) == 2 and all(line.startswith("<3>rules/main.yaml:2: rules[0].") for line in lines)


def test_a_start_that_fails_on_its_port_says_why_at_priority_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, f"state_dir: state\nmetrics_listen: 127.0.0.1:{port}\n", "rules: []\n")
        code, lines = run([*RUNWATCH, "run", "--config", str(cfg)], "journal")
    assert code == 1
    why = f"<3>runwatch: metrics: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert why in lines
    assert all(line.startswith(("<3>", "<4>", "<6>", "<7>")) for line in lines), lines
