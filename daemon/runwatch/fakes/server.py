"""Serve a fake on a real socket: for tests (``fake_server``) and ``runwatch fake`` (``run_fake``)."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

import anyio
import anyio.abc

from runwatch.clock import Clock
from runwatch.fakes._base import FakeBase
from runwatch.fakes.exa import FakeExa
from runwatch.fakes.olostep import FakeOlostep
from runwatch.fakes.scenario import Scenario
from runwatch.httpserver import serve
from runwatch.sources.registry import PROVIDERS as REGISTRY

__all__ = ["PROVIDERS", "RunningFake", "fake_server", "make_fake", "run_fake"]

PROVIDERS: tuple[str, ...] = tuple(REGISTRY)

F = TypeVar("F", bound=FakeBase)


@dataclass(frozen=True, slots=True)
class RunningFake(Generic[F]):
    """A fake being served; ``base_url`` is what goes into ``providers.<p>.base_url``."""

    provider: str
    fake: F
    #: The server's root, ``http://127.0.0.1:PORT``.
    url: str
    base_url: str


@overload
def make_fake(
    provider: Literal["exa"], scenario: Scenario | None = ..., clock: Clock | None = ...
) -> FakeExa: ...
@overload
def make_fake(
    provider: Literal["olostep"], scenario: Scenario | None = ..., clock: Clock | None = ...
) -> FakeOlostep: ...
@overload
def make_fake(provider: str, scenario: Scenario | None = ..., clock: Clock | None = ...) -> FakeBase: ...
def make_fake(provider: str, scenario: Scenario | None = None, clock: Clock | None = None) -> FakeBase:
    """The fake for ``provider`` (the registry names it); no scenario means the demo story."""
    spec = REGISTRY.get(provider)
    if spec is not None:
        module, _, cls = spec.fake.partition(":")
        fake: FakeBase = getattr(importlib.import_module(module), cls)(scenario, clock)
        return fake
    raise ValueError(f"unknown provider {provider!r} (expected one of {', '.join(PROVIDERS)})")


@overload
def fake_server(
    provider: Literal["exa"], scenario: Scenario | None = ..., clock: Clock | None = ..., listen: str = ...
) -> contextlib.AbstractAsyncContextManager[RunningFake[FakeExa]]: ...
@overload
def fake_server(
    provider: Literal["olostep"],
    scenario: Scenario | None = ...,
    clock: Clock | None = ...,
    listen: str = ...,
) -> contextlib.AbstractAsyncContextManager[RunningFake[FakeOlostep]]: ...
@overload
def fake_server(
    provider: str, scenario: Scenario | None = ..., clock: Clock | None = ..., listen: str = ...
) -> contextlib.AbstractAsyncContextManager[RunningFake[FakeBase]]: ...
def fake_server(
    provider: str, scenario: Scenario | None = None, clock: Clock | None = None, listen: str = "127.0.0.1:0"
) -> contextlib.AbstractAsyncContextManager[RunningFake[Any]]:
    """Serve a fake on ``listen`` (port 0: a free one) for the duration of an ``async with``.

    The scenario clock starts (t0) when this is entered, so offsets count from the server's start.
    """
    return _fake_server(provider, scenario, clock, listen)


@contextlib.asynccontextmanager
async def _fake_server(
    provider: str, scenario: Scenario | None, clock: Clock | None, listen: str
) -> AsyncIterator[RunningFake[FakeBase]]:
    fake = make_fake(provider, scenario, clock)
    async with serve(fake.app, listen, name=f"fake {provider}") as listening, anyio.create_task_group() as tg:
        tg.start_soon(fake.pusher.run)  # the fake's webhooks, posted as the scenario makes them
        yield RunningFake(provider, fake, listening.url, listening.url + fake.prefix)
        tg.cancel_scope.cancel()


async def run_fake(
    provider: str,
    listen: str,
    scenario: Scenario | None,
    clock: Clock | None = None,
    *,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a fake until cancelled, after printing the one line a user needs: its base URL.

    ``await task_group.start(run_fake, ...)`` returns that base URL once the server is listening.

    Cancellation (Ctrl-C, a test's cancel scope) ends the server through a normal exit of
    :func:`fake_server`, shielded: a cancelled exit of ``httpserver.serve`` would skip uvicorn's
    shutdown and leave the listening socket open in the event loop.
    """
    stop = anyio.Event()

    async def serve_until_stopped(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        with anyio.CancelScope(shield=True):
            async with fake_server(provider, scenario, clock, listen) as running:
                task_status.started(running.base_url)
                await stop.wait()

    async with anyio.create_task_group() as tg:
        base_url = await tg.start(serve_until_stopped)
        print(f"fake {provider} listening: base_url={base_url}", file=sys.stdout, flush=True)
        task_status.started(base_url)
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()
