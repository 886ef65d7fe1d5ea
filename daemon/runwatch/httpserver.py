"""Serve an ASGI app in-process, inside the caller's task group.

Used by the metrics endpoint and the fake provider servers. uvicorn's own signal handling is turned
off: signals belong to :mod:`runwatch.app`, which cancels us like any other task.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import anyio
import uvicorn
from starlette.types import ASGIApp


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, listen: str, *, name: str = "http") -> AsyncIterator[Listening]:
    """Bind ``listen`` (port 0 picks a free one), serve until the block exits."""
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
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
    )
    server = _QuietServer(config)

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
