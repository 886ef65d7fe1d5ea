"""A real HTTP/1.1 webhook receiver on loopback that verifies Standard Webhooks signatures.

Raw asyncio streams rather than a framework, so a test can script any answer a real endpoint gives:
a status with headers (429 + Retry-After, 503, 410, a redirect), a connection reset mid-response, or
an answer slower than the channel's timeout. Every request is kept with its verified payload (or the
verification error), and waiting on it is waiting on an event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from runwatch.clock import Clock

#: One scripted answer: a status (with optional headers), "reset" (drop the connection mid-answer) or
#: "hang" (never answer: the client gives up at its timeout and closes).
Answer = int | tuple[int, dict[str, str]] | str


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    payload: dict[str, Any] | None
    error: str | None
    answered: Any
    #: The sender's (host, port): which process sent it, for a test that runs several senders.
    peer: tuple[str, int] | None = None

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class WebhookServer:
    secret: str
    port: int = 0
    script: list[Answer] = field(default_factory=list)
    #: The answer once the script is used up.
    default: Answer = 200
    requests: list[Received] = field(default_factory=list)
    #: What ``Received.at`` reads: the test's injected clock when set, else the wall clock.
    clock: Clock | None = None
    #: When set, every answer waits until it is set (a test acts between a send and its answer).
    gate: anyio.Event | None = None
    _changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        """Requests that were answered 2xx and carried a valid signature."""
        return [r for r in self.requests if r.error is None and r.answered == 200]

    async def wait_for(self, count: int, *, delivered: bool = True, timeout: float = 15.0) -> None:
        with anyio.fail_after(timeout):
            while len(self.delivered() if delivered else self.requests) < count:
                await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if not line.startswith(b"POST "):
                    return  # not HTTP (a TLS handshake, say): drop it
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self.script.pop(0) if self.script else self.default
                payload: dict[str, Any] | None = None
                error: str | None = None
                try:
                    payload = Webhook(self.secret).verify(body, headers)
                except (WebhookVerificationError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                at = self.clock.now() if self.clock is not None else time.time()
                peer = writer.get_extra_info("peername")  # (host, port) on IPv4; IPv6 adds two more
                self.requests.append(Received(headers, body, at, payload, error, answer, peer and peer[:2]))
                self._changed.set()
                self._changed = anyio.Event()
                if self.gate is not None:
                    await self.gate.wait()
                if answer == "reset":
                    writer.transport.abort()
                    return
                if answer == "hang":
                    await reader.read()  # until the client times out and closes
                    return
                status, extra = (answer, {}) if isinstance(answer, int) else answer
                assert isinstance(status, int) and isinstance(extra, dict)
                text = json.dumps({"status": status}).encode()
                head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(text)}\r\n"
                head += "content-type: application/json\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(head.encode() + b"\r\n" + text)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def webhook_server(secret: str) -> AsyncIterator[WebhookServer]:
    server = WebhookServer(secret)
    srv = await asyncio.start_server(server._handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        srv.close()
        await srv.wait_closed()
