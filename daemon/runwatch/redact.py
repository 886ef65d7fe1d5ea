"""Secrets never leave the process in clear: one place knows them and scrubs every line we emit.

API keys, apprise URLs (tokens in the path, passwords in the userinfo) and webhook secrets are
registered when the config is loaded; logs, errors, CLI output and metric labels pass through
:func:`redact`. Patterns catch what was never registered (``user:pass@`` in any URL, bearer tokens).
"""

from __future__ import annotations

import re
import threading
from typing import Any
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
    """Register a channel URL and the parts of it that are credentials, and only those.

    apprise knows which parts of each service's URL are secret: its ``url(privacy=True)`` masks them.
    The parts where the private and the plain rendering differ are what we register, so a host, a
    port or a path like ``/runwatch`` stays readable in logs. A URL apprise does not know (a webhook
    URL) keeps only its password and secret-looking query values, plus long random-looking path parts.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        register(url)
        return
    found = _apprise_private_parts(url)
    if found is None:
        found = [seg for seg in parts.path.split("/") if _looks_random(seg)]
    if parts.password:
        found.append(parts.password)
    found.extend(v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_QUERY_KEYS)
    if found:
        register(url)  # whole first, so a URL in a line is masked as one piece
    for secret in found:
        register(secret)
        register(unquote(secret))


_SPLIT = re.compile(r"[/@?&=:#]+")


def _apprise_private_parts(url: str) -> list[str] | None:
    """The tokens apprise masks in its private rendering of ``url``; None if apprise does not know it."""
    if url.startswith(("http://", "https://", "postgres://", "postgresql://")):
        return None  # a webhook URL or the state's database: apprise has no plugin for it
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:
        return None
    if not plugin:
        return None
    render: Any = plugin.url
    plain = _SPLIT.split(str(render(privacy=False)))
    private = _SPLIT.split(str(render(privacy=True)))
    if len(plain) != len(private):
        return [seg for seg in plain if _looks_random(seg)]
    return [a for a, b in zip(plain, private, strict=True) if a != b and a]


def _looks_random(segment: str) -> bool:
    """A token rather than a word: long, and mixing digits with letters (or cases) like a key does."""
    if len(segment) < 16 or "." in segment:
        return False
    kinds = sum(
        (
            any(c.isdigit() for c in segment),
            any(c.islower() for c in segment),
            any(c.isupper() for c in segment),
        )
    )
    return kinds >= 2


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
