"""Every error runwatch raises on purpose, in one tree, so a caller knows what to catch.

::

    RunwatchError                  base: str() is one line a user can act on, with no secret in it
    ├── ConfigError                a config or rule file is wrong (``problems``: file:line: field: what)
    ├── ProviderError              a provider API request failed for good (sources.http.ApiError)
    ├── DeliveryError              a channel could not be built or used (send-test, channel setup)
    └── StateError                 the state (directory, file or database) cannot be used
        ├── StateLockedError       another runwatch holds the state directory (names its pid)
        ├── StateMissingError      there is no state yet (a command that never creates one)
        ├── StateUnavailableError  the state's database cannot be reached (down, restarting, cut off)
        ├── StateCorruptError      the state file is not a runwatch SQLite database
        ├── StateTooNewError       the state was written by a newer runwatch
        └── FencedOut              a poller's write refused: its lease ran out or another holds it

The CLI turns each into its message and exit status 1; nothing else escapes as a traceback. A delivery
worker never lets any exception (ours or a channel plugin's) end it: it becomes a retry.
"""

from __future__ import annotations

from collections.abc import Sequence

from runwatch.redact import redact


class RunwatchError(Exception):
    """Base of every error runwatch raises on purpose; its message is redacted and fit to print."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ConfigError(RunwatchError):
    """A config or rule file is wrong; ``problems`` holds one ``file:line: field: what`` item each."""

    def __init__(self, problems: Sequence[object]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ProviderError(RunwatchError):
    """A provider API could not be used (after retries, or not retryable)."""


class DeliveryError(RunwatchError):
    """A channel could not be built or could not send (outside the outbox's own retry loop)."""


class StateError(RunwatchError):
    """The state directory or its SQLite file cannot be used; the message says what to do."""


class StateLockedError(StateError):
    """Another runwatch process holds the state directory's lock."""


class StateMissingError(StateError):
    """There is no runwatch state where the config points (a command that reads one never creates it)."""


class StateUnavailableError(StateError):
    """The state's database cannot be reached now (down, restarting, the network cut): worth trying
    again later, unlike a refused login or a missing database."""


class FencedOut(StateError):
    """A write carrying a fence was refused, writing nothing: the lease it names has expired or has
    another holder (this instance was paused or cut off past its lease; another one polls now)."""


class StateCorruptError(StateError):
    """The state file exists but is not a runwatch SQLite database."""


class StateTooNewError(StateError):
    """The state file's schema is newer than this runwatch understands."""
