"""The apprise channel kind: Slack, email, json:// and the rest of apprise's services.

apprise blocks and throttles each plugin instance (5.5 s between emails, 1.2 s for Slack), so a channel
keeps one apprise instance per sending thread: the throttle becomes a per-channel rate limit and a
slow channel stalls only itself. apprise does not raise; it returns a false result and logs why, so the
log is captured per send (per thread, so channels sending at once never mix their logs) and becomes
the outcome: a status it names (``error=429``) is classified like a webhook's, the rest is retried.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apprise
from pydantic import BaseModel, SecretStr

from runwatch.delivery.channel import ChannelSetupError, Outcome, Retry, outcome_for_status, read_secret_file
from runwatch.model import Alert
from runwatch.redact import redact, register_url

KIND = "apprise"

_NOTIFY_TYPE = {
    "critical": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "info": apprise.NotifyType.INFO,
}
_BODY_FORMAT = {
    "text": apprise.NotifyFormat.TEXT,
    "markdown": apprise.NotifyFormat.MARKDOWN,
    "html": apprise.NotifyFormat.HTML,
}
_STATUS = re.compile(r"error=(\d{3})\b")


class _ThreadCapture(logging.Handler):
    """Collects apprise's warnings and errors for the call running on the current thread."""

    local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        buf = getattr(self.local, "buf", None)
        if buf is not None:
            buf.append(record.getMessage())


_capture = _ThreadCapture(level=logging.WARNING)
_apprise_log = logging.getLogger("apprise")
_apprise_log.addHandler(_capture)
# apprise's lines become the reason in our own (redacted) log line and in the outbox; printed as
# well they would say it twice, and ``check`` would print raw library errors beside its problems.
_apprise_log.propagate = False


@contextmanager
def captured() -> Iterator[list[str]]:
    """What apprise logs (warning and up) on this thread while the block runs."""
    buf: list[str] = []
    _capture.local.buf = buf
    try:
        yield buf
    finally:
        _capture.local.buf = None


def why_unusable(url: str) -> str | None:
    """None if apprise can use ``url``, else apprise's own reason (redacted)."""
    probe = apprise.Apprise()
    with captured() as why:
        ok = probe.add(url)
    if ok:
        return None
    reasons = [w for w in why if not w.startswith("Could not load")] or why
    text = "; ".join(reasons) if reasons else "unknown service or bad syntax"
    return redact(f"apprise cannot use this URL: {text}")


class AppriseChannel:
    """One apprise URL; the body is sent as the rule's ``format`` says (text keeps its line breaks)."""

    kind = KIND

    def __init__(self, name: str, url: str) -> None:
        register_url(url)
        why = why_unusable(url)
        if why is not None:
            raise ChannelSetupError("apprise", why)
        self.name = name
        self._url = url
        self._local = threading.local()

    def _instance(self) -> apprise.Apprise:
        inst: apprise.Apprise | None = getattr(self._local, "apprise", None)
        if inst is None:
            # Sequential: this send already runs in a delivery thread of its own; apprise's own
            # thread pool would add a hop per send (and a thread per channel) for nothing.
            inst = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
            inst.add(self._url)
            self._local.apprise = inst
        return inst

    def send(self, alert: Alert) -> Outcome:
        with captured() as why:
            try:
                ok = self._instance().notify(
                    title=alert.title,
                    body=alert.body or alert.title,
                    notify_type=_NOTIFY_TYPE.get(alert.severity, apprise.NotifyType.INFO),
                    body_format=_BODY_FORMAT.get(alert.format, apprise.NotifyFormat.TEXT),
                )
            except Exception as exc:  # a plugin bug must not kill the worker
                return Retry("error", redact(f"{type(exc).__name__}: {exc}")[:500])
        if ok:
            return outcome_for_status(200, "")
        why = _result_logs(ok) or why
        detail = redact("; ".join(why) if why else "apprise reported failure")[:500]
        m = _STATUS.search(detail)
        if m:
            return outcome_for_status(int(m.group(1)), detail)
        lowered = detail.lower()
        if "connection" in lowered or "connect" in lowered:
            return Retry("connect", detail)
        if "timed out" in lowered or "timeout" in lowered:
            return Retry("timeout", detail)
        if "smtp" in lowered or "e-mail" in lowered or "email" in lowered:
            return Retry("smtp", detail)
        return Retry("error", detail)

    def close(self) -> None:
        pass


def _result_logs(result: object) -> list[str]:
    """The warnings apprise kept in its result (apprise 2.3+: it may send from a pool thread of its
    own, where a per-thread log capture does not see them)."""
    logs = getattr(result, "logs", None)
    if not callable(logs):
        return []
    try:
        return [e.message for e in logs() if str(getattr(e, "level", "")).upper() in _LOUD]
    except Exception:  # an apprise internals change must not cost us the outcome
        return []


_LOUD = {"WARNING", "ERROR", "CRITICAL"}


class AppriseKind:
    """``apprise: URL`` or ``apprise_file: PATH`` in a channel block, or ``<channel>_apprise_url``."""

    name = KIND
    credential = "apprise_url"
    credential_alone = True
    credential_example = "json://localhost"

    def config_fields(self) -> Mapping[str, tuple[Any, Any]]:
        return {"apprise": (SecretStr | None, None), "apprise_file": (str | None, None)}

    def configured(self, block: BaseModel) -> bool:
        return getattr(block, "apprise", None) is not None or getattr(block, "apprise_file", None) is not None

    def build(self, name: str, block: BaseModel, *, base_dir: Path, credential: str | None) -> AppriseChannel:
        secret: SecretStr | None = getattr(block, "apprise", None)
        file: str | None = getattr(block, "apprise_file", None)
        if secret is not None and file is not None:
            raise ChannelSetupError("apprise_file", "give either apprise or apprise_file, not both")
        if secret is not None:
            url, field = secret.get_secret_value().strip(), "apprise"
        elif file is not None:
            url, field = read_secret_file(base_dir, file, "apprise_file"), "apprise_file"
        elif credential is not None:
            url, field = credential, "apprise"
        else:
            raise ChannelSetupError("apprise", "no URL given")
        if "://" not in url:
            register_url(url)
            raise ChannelSetupError(field, "is not an apprise URL (expected scheme://...)")
        return AppriseChannel(name, url)
