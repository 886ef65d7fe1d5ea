"""How hard and how fast to deliver to one channel: its rate, retries, TTL and concurrency.

Each key defaults from the top-level ``delivery:`` block and may be set per channel beside its kind's
block. The rate is a window of the last sends on the injected clock (``"2/s"``: at most 2 sends start in
any one second), so tests drive it without waiting; the send times are kept in the state, one budget
per channel for every instance that sends from it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from runwatch.store.interfaces import SendLog

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateSpec:
    """At most ``count`` sends in any window of ``period`` seconds."""

    count: int
    period: float

    def __str__(self) -> str:
        """As the user wrote it: ``1`` per 2 s reads ``0.5/s``, ``5`` per 120 s ``2.5/m``."""
        for unit, seconds in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
            if self.period % seconds == 0:
                return f"{self.count * seconds / self.period:g}/{unit}"
        return f"{self.count / self.period:g}/s"


def parse_rate(value: Any) -> RateSpec:
    if isinstance(value, RateSpec):
        return value
    m = _RATE.match(str(value)) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f'{value!r} is not a rate (use N/s, N/m or N/h, e.g. "2/s", "30/m")')
    # A window holds whole sends: "0.5/s" is 1 send in any 2 s, "2.5/m" 5 in any 2 minutes.
    count = Fraction(m.group(1))
    return RateSpec(count.numerator, _PERIOD[m.group(2)] * count.denominator)


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
    #: A claim on a row runs out after this unless renewed (``delivery.claim_timeout``, daemon-wide).
    claim_timeout: float = 60.0


class SendWindow:
    """A channel's ``rate`` as a guarantee: at most ``count`` sends start in any window of ``period``,
    across every sender of the state.

    A token bucket (capacity N, refilled N per period) lets 2N sends through in one period (a full
    bucket, then the refill), which is not what "at most N per period" says. The start times of the
    last N sends are kept instead, in the state (:class:`~runwatch.store.interfaces.SendLog`), so that
    every instance on a shared database draws on one budget and a restart frees no slot: a send may
    start at ``now`` only while fewer than N of them are later than ``now - period``, and
    :meth:`start` asks the state exactly that, atomically, before each send.

    Rows claimed but not yet sent hold a slot here (``reserved``), so several loops of one channel
    (``concurrency``) do not claim the same slot; a reserved slot that is never sent (silenced, or the
    batch was cut short) is given back. Another instance's claims are not seen: two instances may both
    claim for the last slot, and the one whose :meth:`start` is refused gives its batch back and waits.
    """

    def __init__(self, spec: RateSpec, log: SendLog, channel: str) -> None:
        self.count = spec.count
        self.period = spec.period
        self.log = log
        self.channel = channel
        #: Slots taken by claimed rows whose send has not started yet.
        self.reserved = 0
        # Claims come from the event loop, sends from the worker's threads.
        self._lock = threading.Lock()

    def plan(self, now: float) -> tuple[int, float]:
        """How many sends may be claimed now, and when the next send may start (once enough of the
        recent sends are a period old; reserved slots count as sent now, the earliest they can be).
        One read of the state for both."""
        recent = [t for t in self.log.recent(self.channel) if now < t + self.period]
        with self._lock:
            reserved = self.reserved
        free = max(0, self.count - reserved - len(recent))
        if free:
            return free, now
        window = sorted(recent + [now] * reserved)
        return 0, window[len(window) - self.count] + self.period

    def reserve(self, n: int) -> None:
        with self._lock:
            self.reserved += n

    def release(self, n: int) -> None:
        """Give back slots of claimed rows that will not be sent."""
        with self._lock:
            self.reserved = max(0, self.reserved - n)

    def start(self, now: float) -> bool:
        """A reserved send starts now (True: its slot became a send time in the state), or may not:
        another sender took the slot first (False: the slot stays reserved until :meth:`release`)."""
        if not self.log.start(self.channel, now, self.count, self.period):
            return False
        with self._lock:
            self.reserved = max(0, self.reserved - 1)
        return True
