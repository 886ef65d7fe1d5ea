"""The settings every provider takes (``providers.<name>:``); a provider's module subclasses them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from runwatch.durations import Duration


class ProviderSettings(BaseModel):
    """One provider's block. Defaults differ per provider only in ``base_url`` (and validation)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    api_key: SecretStr | None = None
    #: How often a monitor with an unfinished run (or a scheduled run due) is polled.
    poll_interval: Duration = 60.0
    #: How often an idle monitor (nothing unfinished, nothing due) is polled, and the monitor list read.
    idle_poll_interval: Duration = 300.0
    #: Monitor ids to watch; empty means every monitor of the account.
    monitors: list[str] = Field(default_factory=list)
    #: How many requests to this provider may be in flight at once (also the connection pool size).
    concurrency: int = Field(default=8, ge=1, le=256)
    #: A request budget: at most this many requests per second to this provider (retries included).
    max_requests_per_second: float = Field(default=20.0, gt=0)
    timeout: Duration = 30.0
    #: Retries of one request (5xx, 429, timeouts, broken JSON) within one poll, with backoff.
    retries: int = Field(default=3, ge=0, le=20)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")

    @field_validator("monitors", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v
