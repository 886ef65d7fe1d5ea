"""sd_notify as systemd sees it: a real ``runwatch run`` subprocess sends datagrams to a real
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract ``@name``)."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwatch.service import systemd
from tests.conftest import write_config
from tests.tools import RUNWATCH, free_port, running

RULES = """
rules:
  - name: failed
    match: {kind: run.status, to: failed}
    notify: [ops]
"""


class Datagrams:
    """What systemd would receive, one message at a time, with a deadline on each wait."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seen: list[dict[str, str]] = []

    def next(self, timeout: float = 20.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        msg = dict(line.split("=", 1) for line in data.splitlines())
        self.seen.append(msg)
        return msg

    def until(self, key: str, value: str = "1", timeout: float = 20.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.1, deadline - time.monotonic()))
            if msg.get(key) == value:
                return msg


@pytest.fixture(params=["abstract", "path"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Datagrams]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = f"runwatch-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        env_value = "@" + name
    else:
        path = tmp_path / "notify.sock"
        sock.bind(str(path))
        env_value = str(path)
    with sock:
        yield env_value, Datagrams(sock)


def test_ready_watchdog_reload_stopping(tmp_path: Path, notify_socket: tuple[str, Datagrams]) -> None:
    """READY after the metrics endpoint listens; WATCHDOG=1 at half of WATCHDOG_USEC while the loop
    runs, even with the provider unreachable (an outage is not a wedged loop); SIGHUP gives
    RELOADING=1 with MONOTONIC_USEC and then READY=1; SIGTERM gives STOPPING=1 and exit 0."""
    address, datagrams = notify_socket
    dead_port = free_port()  # nothing listens there: every poll fails with a connect error
    cfg = write_config(
        tmp_path,
        f"""
metrics_listen: 127.0.0.1:{free_port()}
providers:
  exa: {{base_url: "http://127.0.0.1:{dead_port}", api_key: test-key, poll_interval: 1s, retries: 0}}
channels:
  ops: {{apprise: "json://127.0.0.1:{free_port()}/ops"}}
""",
        RULES,
    )
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    with running([*RUNWATCH, "run", "--config", str(cfg)], env=env) as proc:
        ready = datagrams.until("READY")
        assert "polling exa" in ready.get("STATUS", "")
        # 0.2 s apart; over two poll cycles that all fail, the beats go on.
        beats = [datagrams.until("WATCHDOG") for _ in range(8)]
        assert len(beats) == 8

        before = time.monotonic_ns() // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = datagrams.until("RELOADING")
        after = time.monotonic_ns() // 1000
        # CLOCK_MONOTONIC is the same clock in both processes, as systemd requires.
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        assert datagrams.until("READY")

        proc.send_signal(signal.SIGTERM)
        assert datagrams.until("STOPPING")
        assert proc.wait(timeout=30) == 0
    assert not any("Traceback" in str(m) for m in datagrams.seen)


def test_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),  # our pid below is 4242
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    env: dict[str, str], expected: float | None
) -> None:
    assert systemd.watchdog_interval(env, pid=4242) == expected
