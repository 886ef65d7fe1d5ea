"""Structured logs: one line per event, ``key=value`` (logfmt) or JSON, secrets redacted last.

Call sites say what happened and attach fields: ``log.warning("poll.failed", provider="exa",
status=503, request_id="req_1")``. The formatter redacts the finished line, so no field, message or
traceback can carry a secret out.

Under systemd, stderr goes to journald: each line then starts with its syslog priority (``<3>``,
``<4>``, ...; sd-daemon(3)), so ``journalctl -p warning`` filters on runwatch's own levels. Lines carry
no colour codes, on a TTY or not.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from runwatch.redact import redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fmt_value(v: Any) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return json.dumps(s)
    return s


#: Python level -> syslog priority, the prefix journald reads (sd-daemon(3)).
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def is_journal_stream(stream: Any) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM`` dev:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _Formatter(logging.Formatter):
    def __init__(self, style: str, journal: bool = False) -> None:
        super().__init__()
        self.json = style == "json"
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        head: dict[str, Any] = {"ts": ts, "level": record.levelname.lower(), "event": record.getMessage()}
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).replace("\n", " | ")
        if self.json:
            line = json.dumps({**head, **fields}, default=str)
        else:
            line = " ".join(f"{k}={_fmt_value(v)}" for k, v in {**head, **fields}.items())
        if self.journal:
            level = max((lv for lv in _SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            line = f"<{_SYSLOG_PRIORITY[level]}>{line}"
        return redact(line)


class Log:
    """A thin logger that takes fields as keyword arguments."""

    def __init__(self, name: str) -> None:
        self._log = logging.getLogger(name)

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc: bool = False) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra=fields, exc_info=exc, stacklevel=3)

    def debug(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields, exc=True)


def get_logger(name: str) -> Log:
    return Log(name)


def set_level(level: str) -> None:
    """runwatch's own log level (a reload applies ``log_level`` this way; the handler stays)."""
    logging.getLogger("runwatch").setLevel(level.upper())


def setup(level: str = "info", style: str = "logfmt", stream: Any = None) -> None:
    """Route runwatch's logs (and the libraries' warnings) to one stream, one line per event."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(_Formatter(style, journal=is_journal_stream(out)))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_runwatch", False):
            root.removeHandler(h)
    handler._runwatch = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    set_level(level)
    for noisy in ("httpx", "httpcore", "uvicorn", "apprise"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
