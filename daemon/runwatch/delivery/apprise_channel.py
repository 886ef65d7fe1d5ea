"""A channel that sends through apprise (Slack, email, json://, and the rest of apprise's services).

apprise is blocking and throttles each plugin instance (5.5 s between emails, 1.2 s for Slack), so a
channel keeps one apprise instance and one worker: the throttle becomes a fair per-channel rate limit
and a slow channel stalls only itself. apprise does not raise; it returns False and logs why, so the
log is captured per send (per thread, so channels sending at once never mix their logs) and becomes
the (redacted) error.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import apprise

from runwatch.redact import redact, register_url

_NOTIFY_TYPE = {
    "critical": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "info": apprise.NotifyType.INFO,
}


class _ThreadCapture(logging.Handler):
    """Collects apprise's warnings for the send running on the current thread."""

    local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        buf = getattr(self.local, "buf", None)
        if buf is not None:
            buf.append(record.getMessage())


_capture = _ThreadCapture(level=logging.WARNING)
logging.getLogger("apprise").addHandler(_capture)


class SendFailed(Exception):
    """A send that did not go through; the message is safe to log (already redacted)."""


class Channel(Protocol):
    name: str

    def send(self, title: str, body: str, severity: str) -> None:
        """Blocking; raise SendFailed. Called from a worker thread, one call at a time per channel."""
        ...


class AppriseChannel:
    def __init__(self, name: str, url: str) -> None:
        register_url(url)
        self.name = name
        self._apprise = apprise.Apprise()
        if not self._apprise.add(url):
            raise ValueError(f"channel {name!r}: apprise cannot use this URL (unknown service or bad syntax)")

    def send(self, title: str, body: str, severity: str) -> None:
        notify_type = _NOTIFY_TYPE.get(severity, apprise.NotifyType.INFO)
        why: list[str] = []
        _capture.local.buf = why
        try:
            ok = self._apprise.notify(title=title, body=body or title, notify_type=notify_type)
        except Exception as exc:  # a plugin bug must not kill the worker
            raise SendFailed(redact(f"{self.name}: {type(exc).__name__}: {exc}")[:500]) from None
        finally:
            _capture.local.buf = None
        if not ok:
            reason = why[-1] if why else "apprise reported failure"
            raise SendFailed(redact(f"{self.name}: {reason}")[:500])
