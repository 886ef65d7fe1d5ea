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
        └── FencedOut              a write by an instance that no longer holds the lease it names

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
    """The state (directory, SQLite file or PostgreSQL database) cannot be used; the message says what
    to do."""


class StateLockedError(StateError):
    """Another runwatch process holds the state directory's lock."""


class StateMissingError(StateError):
    """There is no runwatch state where the config points (a command that reads one never creates it)."""


class StateUnavailableError(StateError):
    """The state's database cannot be reached now (down, restarting, the network cut): worth trying
    again later, unlike a refused login or a missing database."""


class StateCorruptError(StateError):
    """The state file exists but is not a runwatch SQLite database."""


class StateTooNewError(StateError):
    """The state's schema is newer than this runwatch understands."""


class FencedOut(StateError):
    """A write named a lease (its fence) this instance no longer holds: it ran out (this instance was
    paused or cut off past it) or another instance holds it and polls now.

    Nothing of the write is kept. The instance goes back to standby; it is not an error of the state.
    """
