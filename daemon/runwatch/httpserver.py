"""Serve an ASGI app in-process, inside the caller's task group; and ``/healthz`` before it can.

Used by the metrics endpoint, the push listener and the fake provider servers. uvicorn's own signal
handling is turned off: signals belong to :mod:`runwatch.service.app`, which cancels us like any other task.

``runwatch run`` binds its metrics address first thing (:func:`early_health`), before the daemon's
imports and its state are loaded, and answers ``/healthz`` from a thread meanwhile; :func:`serve` then
takes that very socket over. uvicorn is imported only by :func:`serve`, so this module is cheap to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import socket
import threading
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from starlette.types import ASGIApp

#: ``metrics_listen``'s default (runwatch.config.Settings says the same).
DEFAULT_LISTEN = "127.0.0.1:9464"


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def can_listen(listen: str) -> bool:
    """Whether ``HOST:PORT`` is free to listen on now (as :func:`serve` would bind it)."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Listening:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _bind(listen: str, name: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: with proto 0, asyncio skips TCP_NODELAY on accepted connections and
    # every response waits ~40 ms for delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"{name}: cannot listen on {listen}: {exc.strerror}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class EarlyHealth:
    """``/healthz`` while ``runwatch run`` is still importing and building its daemon.

    The socket is bound at once and answered from a thread: ``/healthz`` 200 (the process is up and
    on its way to its loop), anything else 503 ``starting`` (``/readyz`` is not ready, ``/metrics``
    not there yet). :func:`serve` takes the socket over for the same address, so no connection is
    refused in between. (``runwatch run`` ignores SIGHUP meanwhile: a reload asked for this early
    must not end the process, and the daemon reads its config afresh anyway.)
    """

    def __init__(self, listen: str, sock: socket.socket) -> None:
        self.address = parse_listen(listen)
        self.sock = sock
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="runwatch-early-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            select.select([self.sock.fileno(), self._wake_r], [], [])
            if self._stop:
                return
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                self._answer(conn)

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        conn.settimeout(1.0)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            words = data.split(b"\r\n", 1)[0].split()
            path = words[1].split(b"?", 1)[0] if len(words) > 1 else b""
            status, body = (
                (b"200 OK", b"ok\n") if path == b"/healthz" else (b"503 Service Unavailable", b"starting\n")
            )
            head = b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % (
                status,
                len(body),
            )
            conn.sendall(head + b"connection: close\r\n\r\n" + body)
        except OSError:
            pass

    def handover(self) -> socket.socket:
        """Stop answering; the socket, still bound and listening, for the real server."""
        if not self._stop:
            self._stop = True
            os.write(self._wake_w, b"x")
            self._thread.join()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self.sock

    def close(self) -> None:
        """Stop and close, unless :func:`serve` has the socket (it closes it itself)."""
        if _EARLY.get(self.address) is self:
            del _EARLY[self.address]
            self.handover().close()


#: The early sockets not yet taken over, by (host, port).
_EARLY: dict[tuple[str, int], EarlyHealth] = {}
_LISTEN_LINE = re.compile(r"""^metrics_listen:[ \t]*(["']?)([^"'#\s]+)\1[ \t]*(?:#.*)?$""", re.MULTILINE)


def configured_listen(config_path: Path, environ: Mapping[str, str] = os.environ) -> str | None:
    """``metrics_listen`` as the config will say, read cheaply: ``RUNWATCH_METRICS_LISTEN``, else the
    file's top-level line, else the default; None when the file cannot be read. A guess only:
    :func:`serve` drops an early socket that the validated config does not name."""
    for key, value in environ.items():
        if key.upper() == "RUNWATCH_METRICS_LISTEN":
            return value
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = _LISTEN_LINE.search(text)
    return m.group(2) if m else DEFAULT_LISTEN


def early_health(listen: str) -> EarlyHealth | None:
    """Bind ``listen`` now and answer ``/healthz`` until :func:`serve` takes the socket; None when it
    cannot be bound (the daemon's own bind then says why, as it always has)."""
    try:
        sock = _bind(listen, "metrics")
    except (OSError, ValueError):
        return None
    early = EarlyHealth(listen, sock)
    _EARLY[early.address] = early
    return early


def _head_timeout(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head is not complete ``seconds``
    after the connection opened (or after the head's first byte, on a kept-alive connection): a
    client that trickles its headers, or connects and says nothing, cannot hold a connection."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeout(H11Protocol):
        _head: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is in: the app bounds the body itself
            elif self._head is None and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._head = self.loop.call_later(seconds, self._late)

        def _disarm(self) -> None:
            if self._head is not None:
                self._head.cancel()
                self._head = None

        def _late(self) -> None:
            self._head = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeout


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp,
    listen: str,
    *,
    name: str = "http",
    head_timeout: float | None = None,
    max_connections: int | None = None,
) -> AsyncIterator[Listening]:
    """Bind ``listen`` (port 0 picks a free one), serve until the block exits.

    A socket :func:`early_health` bound for the same address is taken over instead; one bound for
    another address (the config said otherwise than its quick read) is closed. ``head_timeout``:
    a request head must arrive within that many seconds (see :func:`_head_timeout`);
    ``max_connections``: beyond that many connections (or requests in flight) uvicorn answers 503.
    """
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    early = _EARLY.pop(parse_listen(listen), None)
    for other in list(_EARLY.values()):
        other.close()
    if early is not None:
        sock = early.handover()
        host, bound_port = early.address[0], sock.getsockname()[1]
    else:
        sock = _bind(listen, name)
        host, bound_port = parse_listen(listen)[0], sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
        limit_concurrency=max_connections,
        http=_head_timeout(head_timeout) if head_timeout is not None else "auto",
    )
    server = QuietServer(config)

    async def serve_shielded() -> None:
        # Shielded: when the block is cancelled the server still shuts down (should_exit below) and
        # closes its connections, instead of being torn down mid-way and leaking the socket.
        with anyio.CancelScope(shield=True):
            await server.serve([sock])

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_shielded)
            # uvicorn offers no event for 'listening'; its flag flips within a few ms.
            while not server.started and not server.should_exit:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            try:
                yield Listening(host, bound_port)
            finally:
                server.should_exit = True
    finally:
        sock.close()
