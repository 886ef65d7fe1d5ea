"""The one retry policy runwatch uses, for polling a provider and for delivering to a channel alike.

Backoff is exponential with additive jitter (tenacity's ``wait_exponential_jitter``), capped at a
maximum, and never shorter than what the other side asked for with ``Retry-After``. Polling retries
in-process (``policy.wait`` is a tenacity wait strategy); delivery persists the next attempt time in
the outbox (``policy.delay(attempt, retry_after)``): both compute the delay with the same code.
"""

from __future__ import annotations

import email.utils
import math
from typing import Any

import tenacity


class RetryPolicy:
    """Exponential backoff with jitter between ``initial`` and ``maximum``, honouring Retry-After.

    ``retry_after_cap`` bounds how long a server may make us wait; delivery passes ``math.inf`` (a
    receiver's Retry-After wins over ``retry_max``), polling a couple of minutes (a poll cycle must end).
    """

    def __init__(self, initial: float, maximum: float, *, retry_after_cap: float = math.inf) -> None:
        self.initial = initial
        self.maximum = maximum
        self.retry_after_cap = retry_after_cap
        self._backoff = tenacity.wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        delay = float(self._backoff(state))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay

    def wait(self, state: tenacity.RetryCallState) -> float:
        """A tenacity wait strategy: the backoff, or the failed call's ``retry_after`` if longer."""
        exc: Any = state.outcome.exception() if state.outcome is not None else None
        return self.delay(state.attempt_number, getattr(exc, "retry_after", None))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)
