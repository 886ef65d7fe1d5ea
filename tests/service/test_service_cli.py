"""What the service path shows a user: journald-ready log lines, and a taken port said in one line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.tools import RUNWATCH, free_port, running

RULES = """
rules:
  - name: failed
    match: {kind: run.status, to: failed}
    notify: [ops]
"""
LOG_LINE = re.compile(r"^(<\d>)?ts=\S+ level=(debug|info|warning|error) event=\S+")


def config(tmp_path: Path, metrics_port: int) -> Path:
    return write_config(
        tmp_path,
        f"""
metrics_listen: 127.0.0.1:{metrics_port}
providers:
  exa:
    base_url: "http://127.0.0.1:{free_port()}"
    api_key: sk-journal-secret-1234
    poll_interval: 1s
    retries: 0
channels:
  ops: {{apprise: "json://127.0.0.1:{free_port()}/ops"}}
""",
        RULES,
    )


def read_until(proc: subprocess.Popen[bytes], fd: int, pattern: str) -> list[str]:
    """Lines from ``fd`` until one matches (the read blocks: the daemon's own output is the event)."""
    lines: list[str] = []
    buf = b""
    with os.fdopen(fd, "rb", buffering=0) as stream:
        while not any(re.search(pattern, x) for x in lines):
            chunk = stream.read(4096)
            if not chunk:
                pytest.fail(f"{pattern!r} never came; exit {proc.poll()}:\n" + "\n".join(lines))
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [x.decode() for x in done]
    return lines


@pytest.mark.parametrize("under_journald", [True, False])
def test_log_lines_carry_syslog_priorities_only_under_journald(tmp_path: Path, under_journald: bool) -> None:
    """journald reads ``<N>`` at the start of a line as its priority (sd-daemon(3)); systemd says the
    stream is journald's by ``$JOURNAL_STREAM`` = dev:inode of stderr. One line per event, no colour."""
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if under_journald:
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen(
        [*RUNWATCH, "run", "--config", str(config(tmp_path, free_port()))],
        stderr=write_fd,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    os.close(write_fd)
    try:
        lines = read_until(proc, read_fd, r"event=poll\.error")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert all(LOG_LINE.match(x) for x in lines), lines
    assert not any("\x1b" in x for x in lines)
    assert not any("sk-journal-secret-1234" in x for x in lines)
    started = next(x for x in lines if "event=runwatch.started" in x)
    warning = next(x for x in lines if "event=poll.error" in x)
    if under_journald:
        assert started.startswith("<6>ts=") and warning.startswith("<4>ts=")
    else:
        assert started.startswith("ts=") and warning.startswith("ts=")


@pytest.fixture
def port_9464_taken() -> Iterator[None]:
    """The demo's default port, held by someone else (or already in use on this machine)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 9464))
        sock.listen()
    except OSError:
        pass  # taken already: just as good
    with sock:
        yield


def test_demo_moves_to_a_free_port_when_the_default_is_taken(port_9464_taken: None) -> None:
    with running([*RUNWATCH, "demo", "--forever"]) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        lines = [first]
        while "metrics:" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
    assert first == (
        "runwatch demo: 127.0.0.1:9464 is taken, serving /metrics on a free port instead"
        " (--metrics-listen HOST:PORT picks one)\n"
    )
    port = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", lines[-1])
    assert port and port.group(1) != "9464"


def test_demo_on_a_taken_port_it_was_told_is_one_line(port_9464_taken: None) -> None:
    out = subprocess.run(
        [*RUNWATCH, "demo", "--metrics-listen", "127.0.0.1:9464"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr == "runwatch demo: metrics: cannot listen on 127.0.0.1:9464: Address already in use\n"


def test_run_on_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        out = subprocess.run(
            [*RUNWATCH, "run", "--config", str(config(tmp_path, port))],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    problems = [x for x in out.stderr.splitlines() if not LOG_LINE.match(x)]
    assert problems == [f"runwatch: metrics: cannot listen on 127.0.0.1:{port}: Address already in use"]
