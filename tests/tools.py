"""The real tools some tests drive (systemd-analyze, promtool, prometheus), and a subprocess helper.

A missing tool is installed from the Debian package that ships it (:mod:`tests.system_tools`); if that
is impossible the test fails naming the package, it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.system_tools import install

REPO = Path(__file__).resolve().parent.parent
RUNWATCH = [sys.executable, "-m", "runwatch"]

#: tool -> the Debian package that ships it
PACKAGES = {"systemd-analyze": "systemd", "promtool": "prometheus", "prometheus": "prometheus"}

T = TypeVar("T")


def require(tool: str) -> str:
    """The tool's path; its package is installed first when it is missing (fails, never skips)."""
    path = shutil.which(tool)
    if path is None:
        install(PACKAGES[tool], lambda: shutil.which(tool))
        path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not on PATH although {PACKAGES[tool]} is installed", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, proc: subprocess.Popen[str] | None = None
) -> T:
    """Poll ``check`` until it returns something truthy (for things no event announces: another
    process's output or port). Fails with ``what`` after ``timeout`` seconds or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"{what}: the process exited ({proc.returncode}) first:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def running(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A subprocess (stdout+stderr merged) that is stopped with SIGTERM, then SIGKILL, at the end."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections process ``pid`` holds open now (Linux's ``/proc``): what
    tells whose request a fake or a receiver got, as they record each request's peer address."""
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if (link := os.readlink(fd)).startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rpartition(":")[2], 16))
    return ports
