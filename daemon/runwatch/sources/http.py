"""The one HTTP layer both providers use: a pooled httpx client, timeouts, retries, clear errors.

Retries are ours (neither SDK retries usefully): :class:`runwatch.retry.RetryPolicy`, the same policy
delivery uses, waiting at least what a 429's ``Retry-After`` asks (capped), on 408/429/5xx, timeouts,
dropped connections and broken JSON.
A 4xx other than 408/429 is not retried: asking again will not help. Errors carry the status, the
provider's request id and a truncated body, and never the API key (it lives only in the client's
default headers, which no error message prints).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import httpx
import tenacity

from runwatch.errors import ProviderError
from runwatch.log import get_logger
from runwatch.metrics import Metrics
from runwatch.redact import redact
from runwatch.retry import RetryPolicy, parse_retry_after

log = get_logger(__name__)

BODY_LIMIT = 300
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
        self.body = redact(body[:BODY_LIMIT]) if body else None
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
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        self.retries = retries
        self.policy = RetryPolicy(backoff_initial, backoff_max, retry_after_cap=retry_after_max)
        self._sleep = sleep
        self._limit = anyio.Semaphore(concurrency)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"accept": "application/json", **headers},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, *, endpoint: str) -> Any:
        """GET and decode JSON, retrying what is worth retrying; raise ApiError otherwise."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self.policy.wait,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, ApiError) and e.retryable),
            sleep=self._sleep,
            before_sleep=lambda state: self._retrying(path, state),
            reraise=True,
        )
        try:
            return await retrying(self._once, path, params, endpoint)
        except ApiError as exc:
            self.metrics.poll_errors.labels(self.provider, exc.reason).inc()
            raise

    def _retrying(self, path: str, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        assert isinstance(exc, ApiError)
        self.metrics.retries.labels(self.provider, exc.reason).inc()
        log.info(
            "api.retry",
            provider=self.provider,
            path=path,
            reason=exc.reason,
            status=exc.status,
            request_id=exc.request_id,
            attempt=state.attempt_number,
            delay=round(state.upcoming_sleep, 3),
        )

    async def _once(self, path: str, params: Mapping[str, Any] | None, endpoint: str) -> Any:
        self.metrics.requests.labels(self.provider, endpoint).inc()
        async with self._limit:
            try:
                resp = await self.client.get(path, params=params)
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
                body=resp.text,
                path=path,
                retry_after=parse_retry_after(resp.headers.get("retry-after"), time.time()),
            )
        try:
            return json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                self.provider,
                "bad_json",
                "response is not valid JSON",
                status=200,
                request_id=request_id,
                body=resp.text,
                path=path,
            ) from None
