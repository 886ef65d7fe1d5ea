"""The plumbing both fakes share: auth, faults, request log and error bodies around each handler.

Each route is wrapped by one plain function (no BaseHTTPMiddleware: it costs more than the handlers),
so a request is: auth check -> fault check -> handler -> record.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlencode

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from runwatch.clock import Clock, SystemClock
from runwatch.fakes._common import RequestLog
from runwatch.fakes.faults import PAGE_FAULTS, STREAM_FAULTS, Fault, Faults
from runwatch.fakes.push import Pusher, PushEvent, Subscription
from runwatch.fakes.scenario import Scenario, default_scenario

#: A route's handler gets the request and the scenario time (seconds since t0) it should answer for.
Handler = Callable[[Request, float], Awaitable[Response]]
#: A route: its path (after the prefix), its name in the request log, its handler; GET unless a fourth
#: item names the method.
RouteSpec = tuple[str, str, Handler] | tuple[str, str, Handler, str]

#: What a ``garbage`` fault sends with status 200 and ``application/json``: cut off mid-string.
GARBAGE = b'{"data": [{"id": "monitor_tru'
#: A request scope key: the handler answers every item in one page (an ``ignore_limit`` fault).
NO_LIMIT = "runwatch.fake.no_limit"
#: A request scope key: the stream fault a streaming handler acts on while it streams.
STREAM_FAULT = "runwatch.fake.stream_fault"


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(obj, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def encode_cursor(kind: str, position: int) -> str:
    """An opaque cursor; clients must pass it back as is, never build one."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int | None:
    """The position a cursor names, or None if it is not one this fake (and this list) handed out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, pos = text.partition(":")
    if prefix != kind or not pos.isdecimal():
        return None
    return int(pos)


class BadRequest(Exception):
    """A query parameter a handler refuses; the wrapper answers 400 with the provider's error body."""


def int_param(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer between {low} and {high}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


class FakeBase:
    """A fake provider: a scenario played against a clock, served as a Starlette app (``.app``)."""

    provider: ClassVar[str]
    #: Path prefix every route is served under (``/websets`` for Exa): part of the base URL.
    prefix: ClassVar[str] = ""
    #: A list page's keys: its items, whether there is more, the next page's cursor.
    page_keys: ClassVar[tuple[str, str, str]] = ("data", "hasMore", "nextCursor")

    def __init__(self, scenario: Scenario | None = None, clock: Clock | None = None) -> None:
        self.scenario = scenario if scenario is not None else default_scenario()
        self.clock: Clock = clock if clock is not None else SystemClock()
        #: Unix seconds the scenario's offsets count from.
        self.t0 = self.clock.now()
        self._compile()
        self.faults = Faults(self._scenario_faults())
        self.requests = RequestLog()
        self._endless = itertools.count(1)
        #: The webhooks this fake posts (see :mod:`runwatch.fakes.push`); served with the fake.
        self.pusher = Pusher(self.clock, self.t0, self._push_events(), self._sign)
        self.app = Starlette(
            routes=[
                Route(
                    self.prefix + r[0],
                    self._endpoint(r[1], r[2]),
                    methods=[r[3] if len(r) > 3 else "GET"],
                    name=r[1],
                )
                for r in self._routes()
            ],
            exception_handlers={HTTPException: self._http_exception},
        )

    # -- what a provider fills in -------------------------------------------------------------------

    def _compile(self) -> None:
        """Precompute every state the scenario can be in, so handlers only look up and bisect."""
        raise NotImplementedError

    def _scenario_faults(self) -> Sequence[Fault]:
        raise NotImplementedError

    def _routes(self) -> list[RouteSpec]:
        raise NotImplementedError

    def _push_events(self) -> list[PushEvent]:
        """Every event the scenario makes that this fake can post (webhooks), in time order."""
        return []

    def _sign(self, subscription: Subscription, body: bytes, now: int) -> dict[str, str]:
        """The headers that authenticate one post (none: unsigned)."""
        return {}

    def _authorized(self, headers: Headers) -> bool:
        raise NotImplementedError

    def _presented_key(self, headers: Headers) -> str:
        """The API key the request carries (what an ``echo_key`` fault echoes)."""
        raise NotImplementedError

    def _error(self, status: int, message: str, route: str) -> Response:
        """The provider's JSON error body for ``status`` (the shape may depend on the route)."""
        raise NotImplementedError

    def _finish(self, response: Response) -> None:
        """Last touch on every response (Exa adds ``X-Request-Id``)."""

    # -- shared ---------------------------------------------------------------------------------------

    def page_limit(self, request: Request, default: int, high: int) -> int:
        """The request's ``limit`` (1..high), or no limit at all under an ``ignore_limit`` fault."""
        if request.scope.get(NO_LIMIT):
            return 1 << 30
        return int_param(request.query_params, "limit", default, 1, high)

    def scenario_time(self) -> float:
        """Seconds since t0 by the fake's clock: what every state is computed for."""
        return self.clock.now() - self.t0

    def _endpoint(self, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        skip = len(self.prefix)

        async def endpoint(request: Request) -> Response:
            path = request.scope["path"][skip:]
            peer = request.scope.get("client")  # the connection's (host, port); None from some transports
            self.requests.arrived(request.method, path, None if peer is None else (peer[0], peer[1]))
            now = self.scenario_time()
            if not self._authorized(request.headers):
                response = self._error(401, "missing or invalid API key", route)
            else:
                fault = self.faults.hit(path, now) if len(self.faults) else None
                if fault is None:
                    response = await self._call(handler, request, now, route)
                else:
                    response = await self._fault_response(fault, handler, request, route)
            self._finish(response)
            self.requests.record(route, request.method, path, response.status_code)
            return response

        return endpoint

    async def _call(self, handler: Handler, request: Request, now: float, route: str) -> Response:
        try:
            return await handler(request, now)
        except BadRequest as exc:
            return self._error(400, str(exc), route)

    async def _fault_response(self, fault: Fault, handler: Handler, request: Request, route: str) -> Response:
        if fault.kind in PAGE_FAULTS:
            return await self._page_fault(fault, handler, request, route)
        if fault.kind in STREAM_FAULTS:  # the handler acts on it as it streams (others ignore it)
            request.scope[STREAM_FAULT] = fault
            return await self._call(handler, request, self.scenario_time(), route)
        if fault.kind == "empty":
            return json_response({})
        if fault.kind == "huge":
            return StreamingResponse(_huge_body(fault.size), media_type="application/json")
        if fault.kind == "echo_key":
            key = self._presented_key(request.headers)
            head = "x" * fault.echo_at + key
            body = (head + "y" * max(0, fault.size - len(head))).encode()
            return Response(body, status_code=fault.status, media_type="application/json")
        if fault.kind == "slow":
            await anyio.sleep(fault.delay)
            return await self._call(handler, request, self.scenario_time(), route)
        if fault.kind == "garbage":
            return Response(GARBAGE, media_type="application/json")
        if fault.kind == "auth":
            return self._error(401, "invalid API key (injected fault)", route)
        if fault.kind == "rate_limit":
            response = self._error(429, "rate limit exceeded (injected fault)", route)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        return self._error(fault.status, f"injected fault: {fault.status}", route)

    async def _page_fault(self, fault: Fault, handler: Handler, request: Request, route: str) -> Response:
        """The handler's own page, rewritten the way a broken server would (see ``FaultKind``)."""
        scope = dict(request.scope)
        asked = request.query_params.get("cursor")
        drop: set[str] = set()
        if fault.kind == "endless" or (fault.kind == "cursor_loop" and asked == "loop"):
            drop.add("cursor")  # cursors this fault made up: the first page again
        if fault.kind == "ignore_limit":
            drop.add("limit")
            scope[NO_LIMIT] = True
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in drop]
        scope["query_string"] = urlencode(query).encode()
        response = await self._call(handler, Request(scope, request.receive), self.scenario_time(), route)
        items, more, cursor = self.page_keys
        if response.status_code != 200 or fault.kind == "ignore_limit":
            return response
        body = json.loads(bytes(response.body))
        if not isinstance(body, dict) or not isinstance(body.get(items), list):
            return response
        if fault.kind == "oversize":
            data = body[items]
            if data:
                body[items] = data + [data[-1]] * max(0, fault.items - len(data))
        elif fault.kind == "cursor_loop":
            # The page's own items, but "more" always, and the cursor just asked for again (the
            # first page points to the real second one, or to a made-up cursor that repeats).
            body[cursor] = asked or (body.get(cursor) if body.get(more) else None) or "loop"
            body[more] = True
        else:
            body[more] = True
            body[cursor] = f"endless{next(self._endless)}"
        return json_response(body)

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        """Unknown paths (404) and wrong methods (405) get the provider's error body too."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        response = self._error(
            status, "no such route" if status == 404 else "method not allowed", "not_found"
        )
        if isinstance(exc, HTTPException) and exc.headers:
            response.headers.update(exc.headers)
        self._finish(response)
        path: str = request.scope["path"]
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
        self.requests.record("not_found", request.method, path, status)
        return response


async def _huge_body(size: int) -> AsyncIterator[bytes]:
    """``{"data": [], "pad": "xxx..."}`` of ``size`` bytes in 64 KiB chunks: valid JSON, just too big."""
    head, tail = b'{"data":[],"pad":"', b'"}'
    yield head
    left = max(0, size - len(head) - len(tail))
    chunk = b"x" * 65536
    while left > 0:
        yield chunk[: min(left, len(chunk))]
        left -= len(chunk)
    yield tail
