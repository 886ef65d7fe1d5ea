"""Shared real parts for tests: an SMTP server (aiosmtpd), a json:// receiver, a daemon builder.

Nothing here is a mock: every server listens on loopback and speaks its real protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from runwatch import log as logsetup
from runwatch import redact
from runwatch.demo.receiver import Receiver
from runwatch.httpserver import Listening, serve
from runwatch.model import Alert, notification_id
from tests.postgres import own_postgres, pg_url, postgres, state_url  # noqa: F401  (fixtures for every test)

SMTP_USER = "alerts"
SMTP_PASSWORD = "hunter2-smtp-Pa55"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    redact.forget_all()
    yield
    redact.forget_all()


@pytest.fixture
def log_lines() -> io.StringIO:
    """Every log line runwatch writes during the test (debug level), to check for leaks."""
    buf = io.StringIO()
    logsetup.setup("debug", "logfmt", buf)
    return buf


@dataclass
class SmtpSink:
    port: int
    messages: list[Message] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    #: Answer DATA with this instead of accepting (e.g. "554 5.7.1 rejected").
    refuse: str | None = None
    refused: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse is not None:
            self.refused += 1
            self._changed.set()
            self._changed = anyio.Event()
            return self.refuse
        self.messages.append(message_from_bytes(envelope.content))
        self._changed.set()
        self._changed = anyio.Event()
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        with anyio.fail_after(timeout):
            while len(self.messages) < count:
                await self._changed.wait()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on this test's event loop, with AUTH LOGIN/PLAIN over plain TCP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = SmtpSink(port)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        user = auth_data.login.decode()
        pw = auth_data.password.decode()
        sink.logins.append((user, pw))
        return AuthResult(success=(user, pw) == (SMTP_USER, SMTP_PASSWORD))

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="smtp.test", authenticator=authenticate, auth_require_tls=False),
        "127.0.0.1",
        port,
    )
    try:
        yield sink
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


def mailto_url(port: int) -> str:
    return (
        f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@example.com?smtp=127.0.0.1&port={port}&mode=insecure"
        "&from=runwatch@example.com&to=oncall@example.com"
    )


@dataclass
class ReceiverServer:
    receiver: Receiver
    http: Listening

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.http.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[ReceiverServer]:
    rec = Receiver()
    async with serve(rec.app, "127.0.0.1:0", name="receiver") as http:
        yield ReceiverServer(rec, http)


def write_config(tmp_path: Path, body: str, rules: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "main.yaml").write_text(rules)
    cfg = tmp_path / "runwatch.yaml"
    cfg.write_text(body)
    return cfg


def make_alert(
    n: int = 1, *, channel: str = "ch", rule: str = "rule", title: str = "t", body: str = "b", at: float = 1.0
) -> Alert:
    """An alert as the pipeline would decide it, for store and channel tests."""
    key = f"exa:run_{n}:status:failed"
    return Alert(
        id=notification_id(key, rule, channel),
        type="run.status",
        channel=channel,
        provider="exa",
        monitor_id="monitor_1",
        run_id=f"run_{n}",
        rule=rule,
        severity="critical",
        title=title,
        body=body,
        detected_at=at,
        occurred_at=at - 0.5,
        from_status="running",
        to_status="failed",
        failed_reason="Quota exceeded",
        labels={"team": "ops"},
        run={"id": f"run_{n}", "status": "failed", "failedReason": "Quota exceeded"},
    )
