"""How hard and how fast to deliver to one channel: its rate, retries, TTL and concurrency.

Each key defaults from the top-level ``delivery:`` block and may be set per channel beside its kind's
block. The rate is a token bucket on the injected clock (``"2/s"``: bursts of 2, then one every 0.5 s),
so tests drive it without waiting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateSpec:
    """``count`` sends per ``period`` seconds."""

    count: float
    period: float

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.period, "s")
        return f"{self.count:g}/{unit}"


def parse_rate(value: Any) -> RateSpec:
    if isinstance(value, RateSpec):
        return value
    m = _RATE.match(str(value)) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f'{value!r} is not a rate (use N/s, N/m or N/h, e.g. "2/s", "30/m")')
    return RateSpec(float(m.group(1)), _PERIOD[m.group(2)])


Rate = Annotated[RateSpec, BeforeValidator(parse_rate), PlainSerializer(str)]


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """The effective delivery settings of one channel."""

    max_attempts: int = 8
    retry_initial: float = 2.0
    retry_max: float = 300.0
    max_age: float = 86400.0
    concurrency: int = 1
    rate: RateSpec | None = None
    retry_after_default: float = 10.0


class TokenBucket:
    """At most ``count`` sends per ``period``: a bucket of ``count`` tokens refilled evenly."""

    def __init__(self, spec: RateSpec, now: float) -> None:
        self.capacity = spec.count
        self.per_second = spec.count / spec.period
        self.tokens = spec.count
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
            self.updated = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens + 1e-9)

    def take(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def next_at(self, now: float) -> float:
        """When the next whole token is there."""
        self._refill(now)
        missing = 1.0 - self.tokens
        return now if missing <= 1e-9 else now + missing / self.per_second
