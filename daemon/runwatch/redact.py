"""Secrets never leave the process in clear: one place knows them and scrubs every line we emit.

API keys, apprise URLs (tokens in the path, passwords in the userinfo) and webhook secrets are
registered when the config is loaded; logs, errors, CLI output and metric labels pass through
:func:`redact`. Patterns catch what was never registered (``user:pass@`` in any URL, bearer tokens).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "<secret>"
_SECRET_QUERY_KEYS = {"token", "key", "apikey", "api_key", "password", "pass", "secret", "webhook", "pw"}
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<pw>[^@/\s]+)@")
_BEARER = re.compile(r"(?i)(bearer\s+|x-api-key[\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9._~+/=-]{6,})")


def register(secret: str | None) -> None:
    """Remember a secret value so every later :func:`redact` masks it."""
    global _pattern
    if not secret or len(secret) < 4:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        # Longest first, so a URL is masked whole before its parts are.
        alts = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in alts))


def register_url(url: str) -> None:
    """Register an apprise/webhook URL and the parts of it that are credentials."""
    register(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        register(parts.password)
        register(unquote(parts.password))
    # Tokens of services like Slack, Discord, Telegram live in the host and path.
    for seg in [parts.hostname or "", *parts.path.split("/")]:
        if len(seg) >= 8 and not seg.startswith("#") and "." not in seg:
            register(seg)
    for key, value in parse_qsl(parts.query):
        if key.lower() in _SECRET_QUERY_KEYS:
            register(value)


def redact(text: str) -> str:
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", text)


def forget_all() -> None:
    """Tests only: start from an empty registry."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
