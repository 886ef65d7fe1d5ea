"""The one HTTP layer both providers use: a pooled httpx client, timeouts, retries, clear errors.

Retries are ours (neither SDK retries usefully): :class:`runwatch.retry.RetryPolicy`, the same policy
delivery uses, waiting at least what a 429's ``Retry-After`` asks (capped), on 408/429/5xx, timeouts,
dropped connections and broken JSON.
A 4xx other than 408/429 is not retried: asking again will not help. Errors carry the status, the
provider's request id and a truncated body, and never the API key: it lives only in the client's
default headers, which no error message prints, and the client registers it with
:mod:`runwatch.redact`, so an API that echoes it in an error body is masked too (redacted before cut).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import httpx
import orjson

from runwatch.errors import ProviderError
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.redact import redact, register
from runwatch.retry import RetryPolicy, parse_retry_after
from runwatch.sources.settings import ProviderSettings

log = get_logger(__name__)

BODY_LIMIT = 300
#: An answer larger than this is refused (counted as ``too_large``), never parsed.
MAX_BODY = 32 * 1024 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ApiError(ProviderError):
    """A request to a provider that failed for good (after retries, or not retryable).

    ``reason`` is a short, bounded label (``http_500``, ``http_429``, ``auth``, ``not_found``,
    ``timeout``, ``connect``, ``bad_json``) used in metrics and logs.
    """

    def __init__(
        self,
        provider: str,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        body: str | None = None,
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.reason = reason
        self.status = status
        self.request_id = request_id
        # Redact, then cut: a cut first could leave the head of a key that the redactor no longer sees.
        self.body = redact(body)[:BODY_LIMIT] if body else None
        self.path = path
        self.retry_after = retry_after
        parts = [f"{provider} GET {path}: {message}"]
        if request_id:
            parts.append(f"request_id={request_id}")
        if self.body:
            parts.append(f"body={self.body!r}")
        super().__init__(redact(" ".join(parts)))

    @property
    def retryable(self) -> bool:
        return self.reason in {"timeout", "connect", "bad_json", "http_429"} or (
            self.status is not None and self.status in RETRY_STATUSES
        )


def _reason(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return f"http_{status}"


class RequestBudget:
    """At most ``rate`` requests a second to one provider, with a burst of one second's worth: a cycle's
    requests are spread out instead of all landing at its start."""

    def __init__(self, rate: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.interval = 1.0 / rate
        self.burst = max(1.0, rate) * self.interval
        self._sleep = sleep
        self._next = 0.0

    async def take(self) -> None:
        now = anyio.current_time()
        at = max(now - self.burst + self.interval, self._next)
        self._next = at + self.interval
        if at > now:
            await self._sleep(at - now)


class ApiClient:
    """One provider's connection pool and retry policy."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        metrics: Metrics,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        concurrency: int = 8,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        max_requests_per_second: float | None = None,
        max_body: int = MAX_BODY,
        secrets: Sequence[str] = (),
    ) -> None:
        for secret in secrets:
            # The key is in every request: whoever builds a client (the daemon, a benchmark, a tool),
            # an answer that echoes it must not carry it into an error or a log line.
            register(secret)
        self.provider = provider
        self.max_body = max_body
        self.metrics = metrics
        self.retries = retries
        self.policy = RetryPolicy(backoff_initial, backoff_max, retry_after_cap=retry_after_max)
        self._sleep = sleep
        # fast_acquire: no trip round the event loop when a slot is free (nearly always: the sources
        # poll with at most ``concurrency`` workers).
        self._limit = anyio.Semaphore(concurrency, fast_acquire=True)
        #: The labelled request counter per endpoint, looked up once.
        self._counters: dict[str, Any] = {}
        self._budget = RequestBudget(max_requests_per_second, sleep) if max_requests_per_second else None
        #: Requests per second the budget allows (inf: no budget), and requests sent so far.
        self.rate = max_requests_per_second or math.inf
        self.sent = 0
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"accept": "application/json", **headers},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def for_provider(
        cls,
        provider: str,
        settings: ProviderSettings,
        metrics: Metrics,
        auth: Callable[[str], Mapping[str, str]],
        **client_kw: Any,
    ) -> ApiClient:
        """The client a provider's settings describe; ``auth`` makes its headers from the key."""
        assert settings.api_key is not None
        key = settings.api_key.get_secret_value()
        return cls(
            provider,
            settings.base_url,
            auth(key),
            metrics,
            timeout=settings.timeout,
            retries=settings.retries,
            concurrency=settings.concurrency,
            max_requests_per_second=settings.max_requests_per_second,
            secrets=(key,),
            **client_kw,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, *, endpoint: str) -> Any:
        """GET and decode JSON, retrying what is worth retrying; raise ApiError otherwise.

        The policy is :class:`RetryPolicy`'s, as tenacity would run it (``retries`` + 1 attempts, its
        wait after each failed one), in a plain loop: a request that succeeds, nearly all of them,
        pays for no retry machinery at all.
        """
        attempt = 1
        while True:
            try:
                return await self._once(path, params, endpoint)
            except ApiError as exc:
                if not exc.retryable or attempt > self.retries:
                    self.metrics.poll_errors.labels(self.provider, exc.reason).inc()
                    raise
                delay = self.policy.delay(attempt, exc.retry_after)
                self._retrying(path, exc, attempt, delay)
            await self._sleep(delay)
            attempt += 1

    def _retrying(self, path: str, exc: ApiError, attempt: int, delay: float) -> None:
        self.metrics.retries.labels(self.provider, exc.reason).inc()
        log.info(
            "api.retry",
            provider=self.provider,
            path=path,
            reason=exc.reason,
            status=exc.status,
            request_id=exc.request_id,
            attempt=attempt,
            delay=round(delay, 3),
        )

    async def _read_bounded(self, resp: httpx.Response, path: str) -> bytes:
        """The body, or ApiError(too_large) as soon as it passes ``max_body`` (never held whole)."""
        headers = resp.headers
        declared = headers.get("content-length")
        if declared and declared.isdigit():
            if int(declared) > self.max_body:
                raise self._too_large(resp, path)
            if "content-encoding" not in headers:
                # Framed by its length and not decompressed: the body is what was declared, no more.
                return await resp.aread()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large(resp, path)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, resp: httpx.Response, path: str) -> ApiError:
        return ApiError(
            self.provider,
            "too_large",
            f"answer over the {self.max_body}-byte limit",
            status=resp.status_code,
            request_id=resp.headers.get("x-request-id"),
            path=path,
        )

    async def _once(self, path: str, params: Mapping[str, Any] | None, endpoint: str) -> Any:
        if self._budget is not None:
            await self._budget.take()
        counter = self._counters.get(endpoint)
        if counter is None:
            counter = self._counters[endpoint] = self.metrics.requests.labels(self.provider, endpoint)
        counter.inc()
        self.sent += 1
        async with self._limit:
            try:
                resp = await self.client.send(
                    self.client.build_request("GET", path, params=params), stream=True
                )
                try:
                    content = await self._read_bounded(resp, path)
                finally:
                    await resp.aclose()
            except httpx.TimeoutException:
                raise ApiError(self.provider, "timeout", "timed out", path=path) from None
            except httpx.TransportError as exc:
                raise ApiError(
                    self.provider, "connect", f"connection failed: {type(exc).__name__}", path=path
                ) from None
        request_id = resp.headers.get("x-request-id")
        if resp.status_code != 200:
            raise ApiError(
                self.provider,
                _reason(resp.status_code),
                f"HTTP {resp.status_code}",
                status=resp.status_code,
                request_id=request_id,
                body=content.decode("utf-8", "replace"),
                path=path,
                retry_after=parse_retry_after(resp.headers.get("retry-after"), time.time()),
            )
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
        try:  # what orjson refuses and json reads (NaN, integers beyond 64 bits)
            return json.loads(content)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                self.provider,
                "bad_json",
                "response is not valid JSON",
                status=200,
                request_id=request_id,
                body=content.decode("utf-8", "replace"),
                path=path,
            ) from None
