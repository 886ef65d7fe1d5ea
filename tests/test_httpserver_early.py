"""``runwatch run`` answers /healthz before its daemon is built: the early socket, and its handover.

Real sockets on loopback, a real HTTP client; the app served after the handover is the daemon's own
operations app (runwatch.web).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runwatch.clock import ManualClock
from runwatch.httpserver import configured_listen, early_health, serve
from runwatch.metrics import Metrics
from runwatch.web import Health, make_app

from .tools import free_port

pytestmark = pytest.mark.anyio


async def test_healthz_answers_at_once_and_serve_takes_the_same_socket_over() -> None:
    early = early_health("127.0.0.1:0")
    assert early is not None
    port = early.sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        for path in ("/readyz", "/metrics"):  # not ready, nothing to show: the daemon is starting
            r = await client.get(f"{url}{path}")
            assert (r.status_code, r.text) == (503, "starting\n")
        health = Health(ManualClock(), {"exa": 60.0})
        async with serve(make_app(Metrics(), health), "127.0.0.1:0") as http:
            assert http.port == port  # the early socket, not a new one
            r = await client.get(f"{url}/readyz")
            assert r.status_code == 503
            assert r.json()["providers"] == {"exa": "no successful poll yet"}  # the daemon's app now
            assert (await client.get(f"{url}/healthz")).status_code == 200
        early.close()  # serve had it: nothing left to do
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


async def test_an_early_socket_the_config_does_not_name_is_closed() -> None:
    early = early_health("127.0.0.1:0")
    assert early is not None
    guessed = early.sock.getsockname()[1]
    async with (
        httpx.AsyncClient() as client,
        serve(make_app(Metrics(), Health(ManualClock(), {})), f"127.0.0.1:{free_port()}") as http,
    ):
        assert http.port != guessed
        assert (await client.get(f"{http.url}/healthz")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{guessed}/healthz")


def test_the_listen_address_is_read_from_the_environment_then_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text('state_dir: ./state\nmetrics_listen: "127.0.0.1:9999"  # ops\n')
    assert configured_listen(cfg, {}) == "127.0.0.1:9999"
    assert configured_listen(cfg, {"runwatch_metrics_listen": "[::1]:9000"}) == "[::1]:9000"
    cfg.write_text("state_dir: ./state\n")
    assert configured_listen(cfg, {}) == "127.0.0.1:9464"  # the default
    assert configured_listen(tmp_path / "missing.yaml", {}) is None


def test_run_with_a_broken_config_still_fails_and_frees_the_port(tmp_path: Path) -> None:
    """The early socket answers /healthz while the config loads; a config that does not load still
    ends the process with its error, and the port is free again."""
    port = free_port()
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text(f"metrics_listen: 127.0.0.1:{port}\nstate_dir: {tmp_path / 'state'}\nno_such_key: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "runwatch", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 78  # EX_CONFIG
    assert "no_such_key" in proc.stdout + proc.stderr
    deadline = time.monotonic() + 5
    early = None
    while early is None and time.monotonic() < deadline:
        early = early_health(f"127.0.0.1:{port}")  # bindable again: the process let it go
    assert early is not None
    early.close()
