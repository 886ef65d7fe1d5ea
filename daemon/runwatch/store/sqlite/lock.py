"""One daemon per state directory: an OS lock (``flock``) held for the daemon's lifetime.

Two daemons on one state would both send every notification. The lock file names the holder's pid so
the second one can say who is in the way; the kernel drops the lock when the holder dies (even on
``kill -9``), so a stale lock never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from runwatch.errors import StateError, StateLockedError

LOCK_NAME = "runwatch.lock"


class StateLock:
    """An exclusive, non-blocking lock on a state directory, released by :meth:`release` or death."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot open the lock file {self.path}: {exc.strerror}; "
                "check that state_dir exists and runwatch may write to it"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StateLockedError(
                f"state directory {state_dir} is in use by another runwatch (pid {holder}); "
                "stop it first, or give this one another state_dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)


def holder_pid(state_dir: Path) -> int | None:
    """The pid of the runwatch holding ``state_dir``, or None when none does (the lock is free)."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
