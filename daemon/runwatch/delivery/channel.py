"""The one seam between the outbox and a way of sending: ``send(alert) -> outcome``.

A channel kind (apprise, webhook, ...) is one module with a :class:`ChannelKind` registered in
:mod:`runwatch.delivery.registry`; nothing else knows it exists. ``send`` is blocking and runs in a
delivery thread, one call at a time per channel worker; it reports what happened instead of raising
(the worker still treats any exception as a retry, so a plugin bug never ends a worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from runwatch.model import Alert

#: HTTP statuses worth asking again (the rest of 4xx will not change by asking again).
RETRY_STATUSES = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class Delivered:
    """The channel acknowledged the notification."""

    status: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Worth another try later; ``after`` is what the other side asked for (Retry-After), if it did.

    ``reason`` is a short bounded label for metrics (``http_5xx``, ``http_429``, ``timeout``,
    ``connect``, ``tls``, ``smtp``, ``error``); ``detail`` the redacted text for logs and the outbox.
    """

    reason: str
    detail: str
    after: float | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Permanent:
    """Asking again will not help (a 4xx, a redirect): the notification becomes a dead letter now."""

    reason: str
    detail: str
    status: int | None = None


Outcome = Delivered | Retry | Permanent


def classify_status(status: int) -> str:
    """A bounded metric label for an HTTP status."""
    if 500 <= status <= 599:
        return "http_5xx"
    if status in RETRY_STATUSES:
        return f"http_{status}"
    if 300 <= status <= 399:
        return "redirect"
    return "http_4xx"


def outcome_for_status(status: int, detail: str, after: float | None = None) -> Outcome:
    """2xx delivered; 408/409/425/429/5xx retry; a redirect or any other 4xx permanent."""
    if 200 <= status <= 299:
        return Delivered(status)
    reason = classify_status(status)
    if status in RETRY_STATUSES or 500 <= status <= 599:
        return Retry(reason, detail, after=after, status=status)
    if 300 <= status <= 399:
        detail = f"{detail} (redirects are not followed: point the channel at the final URL)"
    return Permanent(reason, detail, status=status)


class Channel(Protocol):
    """A configured destination."""

    name: str
    kind: str

    def send(self, alert: Alert) -> Outcome:
        """Blocking; called from a delivery thread. Reports the outcome, should not raise."""
        ...

    def close(self) -> None: ...


class ChannelKind(Protocol):
    """One way of sending, as the registry knows it.

    ``config_fields`` are the keys the kind adds to a channel's block (``apprise:``, ``webhook:``),
    as pydantic field definitions; ``credential`` is the suffix of the file in
    ``$CREDENTIALS_DIRECTORY`` (``<channel>_<credential>``) that can stand in for the secret.
    """

    name: str
    credential: str
    #: Whether the credential file alone makes a channel (an apprise URL does; a webhook needs its URL).
    credential_alone: bool
    #: A valid credential value that is never sent anywhere: ``runwatch check`` run by hand builds a
    #: channel with it to check the rest of its block when only the service can read the real one.
    credential_example: str

    def config_fields(self) -> Mapping[str, tuple[Any, Any]]: ...

    def configured(self, block: BaseModel) -> bool:
        """Whether this channel block uses this kind (one of its keys is set)."""
        ...

    def build(self, name: str, block: BaseModel, *, base_dir: Path, credential: str | None) -> Channel:
        """The channel; raises ChannelSetupError (field, message) for a block that cannot work."""
        ...


class ChannelSetupError(Exception):
    """A channel block that cannot work: ``field`` (relative to the block) and a message."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def read_secret_file(base_dir: Path, file: str, field: str) -> str:
    """A secret kept in a file of its own (``apprise_file:``, ``secret_file:``), relative to the config."""
    path = Path(file) if Path(file).is_absolute() else base_dir / file
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ChannelSetupError(field, f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChannelSetupError(field, f"cannot read {path}: {exc}") from None
