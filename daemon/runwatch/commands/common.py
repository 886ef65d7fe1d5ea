"""What the operator's commands share: one redacted way to print, the config loaded with its secrets
registered for redaction, and the state opened beside a running daemon.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runwatch.commands import journal
from runwatch.config import Config, load_config
from runwatch.delivery.channel import ChannelSetupError
from runwatch.delivery.registry import build_channel
from runwatch.errors import ConfigError, StateError
from runwatch.redact import redact, register
from runwatch.service.assemble import state_location
from runwatch.store import SharedState, open_shared
from runwatch.store.interfaces import Outbox

if TYPE_CHECKING:
    from runwatch.config import Config


def say(text: str, stream: TextIO) -> None:
    """Print one redacted line (or block): the only way these commands write."""
    print(redact(text), file=stream)


# -- config and state ---------------------------------------------------------------------------------
def load(path: Path) -> Config:
    """The config as ``run`` reads it, with every channel's secrets registered for redaction.

    Building each channel with the daemon's code registers exactly what the daemon would mask; a
    channel that cannot be built is skipped here (``check`` is the place to hear about it).
    """
    config = load_config(path)
    for provider in config.enabled_providers().values():
        if provider.api_key is not None:
            register(provider.api_key.get_secret_value())
    for name, block in config.settings.channels.items():
        with contextlib.suppress(ChannelSetupError):
            build_channel(name, block, base_dir=config.base_dir).close()
    return config


@contextlib.contextmanager
def opened_state(config: Config) -> Iterator[SharedState]:
    """The config's state as these commands share it with a running daemon (never created here),
    closed after; a failure of the store becomes one StateError line."""
    shared = open_shared(state_location(config))
    try:
        yield shared
    except sqlite3.Error as exc:
        raise StateError(f"state file {shared.where}: {exc}") from None
    finally:
        shared.close()


@contextlib.contextmanager
def opened_outbox(config: Config) -> Iterator[Outbox]:
    """The outbox of the config's state (see :func:`opened_state`)."""
    with opened_state(config) as shared:
        yield shared.outbox


def print_problems(exc: ConfigError, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    for problem in exc.problems:
        journal.say(redact(str(problem)), journal.ERROR, out)
