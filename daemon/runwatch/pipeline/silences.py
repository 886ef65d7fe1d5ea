"""Silences: notifications that match are not sent while the silence is active (counted instead).

Two sources, one :class:`Muter`: silences in the config (``silences:``; fixed windows or recurring
maintenance windows: ``cron`` + ``duration`` + ``timezone``) and silences added from the CLI while the
daemon runs (``runwatch silence add``), kept in the state so they survive restarts. A silence's
``matchers`` map a label to a glob; an alert's labels are its rule's labels plus ``provider``,
``monitor_id``, ``run_id``, ``rule``, ``severity``, ``channel`` and ``type``. Silences apply when a
notification would be sent, so a silence added after a decision still holds it back.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runwatch.durations import Duration
from runwatch.errors import StateError
from runwatch.model import Alert
from runwatch.store.alert_state import OpenAlert
from runwatch.store.interfaces import Fence, Outbox, Silence, Silences

#: How long the daemon trusts its copy of the CLI's silences before reading them again (seconds).
REFRESH = 2.0


class SilenceSpec(BaseModel):
    """One silence as written in the config: a fixed window, or a recurring maintenance window."""

    model_config = ConfigDict(extra="forbid")

    matchers: dict[str, str] = Field(min_length=1)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cron: str | None = None
    duration: Duration | None = None
    timezone: str = "UTC"
    comment: str = ""
    created_by: str = ""

    @field_validator("matchers")
    @classmethod
    def _globs(cls, v: dict[str, str]) -> dict[str, str]:
        for label, glob in v.items():
            if not glob:
                raise ValueError(f"matcher {label!r} is empty (use '*' to match any value)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a time zone (use an IANA name like Europe/Berlin)") from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"{v!r} is not a cron expression (5 fields: minute hour day month weekday)")
        return v

    @model_validator(mode="after")
    def _window(self) -> SilenceSpec:
        if self.cron is not None or self.duration is not None:
            if self.cron is None or self.duration is None:
                raise ValueError("a maintenance window needs both cron and duration")
            if self.starts_at is not None or self.ends_at is not None:
                raise ValueError("give either cron + duration (recurring) or starts_at/ends_at, not both")
        elif self.ends_at is None:
            raise ValueError("a silence needs ends_at (or cron + duration for a maintenance window)")
        if self.starts_at and self.ends_at and _utc(self.ends_at) <= _utc(self.starts_at):
            raise ValueError("ends_at is not after starts_at: this silence would never be active")
        return self

    def active(self, now: float) -> bool:
        if self.cron is not None and self.duration is not None:
            tz = ZoneInfo(self.timezone)
            local = datetime.fromtimestamp(now, UTC).astimezone(tz)
            # The window that started most recently (a start exactly now counts).
            last: datetime = croniter(self.cron, local).get_prev(datetime)
            if croniter.match(self.cron, local.replace(second=0, microsecond=0)):
                last = local.replace(second=0, microsecond=0)
            return last.timestamp() <= now < last.timestamp() + self.duration
        start = _utc(self.starts_at).timestamp() if self.starts_at else float("-inf")
        end = _utc(self.ends_at).timestamp() if self.ends_at else float("inf")
        return start <= now < end


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels a silence matches on."""
    return {
        **dict(alert.labels),
        "provider": alert.provider,
        "monitor_id": alert.monitor_id,
        "run_id": alert.run_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "channel": alert.channel,
        "type": alert.type,
    }


def matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(fnmatch.fnmatchcase(labels.get(k, ""), glob) for k, glob in matchers.items())


@dataclass
class Muter:
    """Whether an alert is silenced now, by a config silence or a CLI one (re-read every REFRESH s)."""

    configured: Sequence[SilenceSpec]
    stored: Silences | None = None
    _cache: list[Silence] = field(default_factory=list)
    _read_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def silenced_by(self, alert: Alert, now: float) -> str | None:
        """A description of the silence holding ``alert`` back at ``now``, or None."""
        labels: dict[str, Any] | None = None
        for i, spec in enumerate(self.configured):
            if spec.active(now):
                labels = labels or alert_labels(alert)
                if matches(spec.matchers, labels):
                    return f"config silence #{i + 1}" + (f" ({spec.comment})" if spec.comment else "")
        for s in self._stored(now):
            if s.active(now):
                labels = labels or alert_labels(alert)
                if matches(s.matchers, labels):
                    return f"silence {s.id}" + (f" ({s.comment})" if s.comment else "")
        return None

    def _stored(self, now: float) -> list[Silence]:
        if self.stored is None:
            return []
        with self._lock:
            if now - self._read_at >= REFRESH or now < self._read_at:
                with contextlib.suppress(StateError):  # keep the last copy; the next refresh tries again
                    self._cache = self.stored.all()
                self._read_at = now
            return self._cache


def release_ended(
    alerts: Iterable[OpenAlert], outbox: Outbox, muter: Muter, now: float, *, fence: Fence | None = None
) -> list[Alert]:
    """Send what a silence held back, once it ends while the alert is still open.

    A silenced notification of a lifecycle alert is not lost: while the alert fires, its silenced
    rows go back to pending as soon as no silence holds them (sent then, with their own ids, so a
    receiver that saw nothing sees them once). A one-off notification, or an alert that resolved
    while silenced, stays silenced: nothing is open to tell about.
    """
    last = {str(p["id"]): p for a in alerts if a.firing for p in a.last if p.get("id")}
    if not last:
        return []
    held = outbox.silenced_ids(list(last))
    free = [Alert.from_payload(last[i]) for i in sorted(held)]
    free = [a for a in free if muter.silenced_by(a, now) is None]
    if free and outbox.unsilence([a.id for a in free], now, fence=fence):
        return free
    return []
