"""Secrets from systemd credentials: files in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``).

Keeping API keys, apprise URLs and webhook secrets there lets the config file hold no secret, so it can
be readable by the service's ``DynamicUser=``.
"""

from __future__ import annotations

import os
from pathlib import Path

from runwatch.redact import register


def read_credential(name: str) -> str | None:
    """The stripped content of credential ``name``, or None when there is none (or it is empty)."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not cred_dir:
        return None
    path = Path(cred_dir) / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    register(value)
    return value or None
