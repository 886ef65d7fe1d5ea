"""A reload's answer, from the daemon back to ``runwatch reload``: taken, or refused and why.

SIGHUP carries nothing back, yet systemd takes the exit status of ``ExecReload=`` as the result of
``systemctl reload`` (and systemd.service(5) asks for a command that waits until the reload is done).
So the daemon writes the outcome of every reload to ``reload-outcome.json`` in its state directory,
stamped with the instant the reload began: the ``MONOTONIC_USEC`` it sends systemd with
``RELOADING=1`` (:func:`runwatch.service.systemd.reloading`). ``runwatch reload``
(:func:`runwatch.commands.run.ask`) notes the time, signals, and waits (bounded) for an outcome of
that pid stamped later than that. A reload that began after the signal read the files as the command
saw them or newer, so its answer is the answer to this command: exit 0 when it was taken, exit 1 with
the daemon's own ``file:line: field: problem`` lines when it was refused (the daemon keeps what runs),
and exit 1 when no answer came in time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runwatch.log import get_logger
from runwatch.redact import redact

log = get_logger(__name__)

#: In the state directory, beside the state file and the lock.
OUTCOME_FILE = "reload-outcome.json"
#: How long ``runwatch reload`` waits for the answer by default. systemd allows ``ExecReload=`` the
#: unit's ``TimeoutStartSec=`` (60 s in the shipped unit); a reload takes well under a second.
WAIT = 30.0
#: How often the command looks for the answer while it waits.
POLL = 0.05


@dataclass
class ReloadOutcome:
    """What one reload did: taken (with its rule count and the keys that need a restart) or refused
    (with its problems, redacted). ``began`` is CLOCK_MONOTONIC in µs, as sent to systemd."""

    began: int
    pid: int = field(default_factory=os.getpid)
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    rules: int = 0
    needs_restart: list[str] = field(default_factory=list)

    def refused(self, problems: Sequence[object]) -> None:
        self.ok = False
        self.problems = [redact(str(p)) for p in problems]

    def taken(self, rules: int, needs_restart: Sequence[str]) -> None:
        self.ok = True
        self.rules = rules
        self.needs_restart = list(needs_restart)

    def write(self, state_dir: Path) -> None:
        """Replace the last outcome, whole (a reader never sees half of one). A failure is logged and
        not raised: the reload itself is done, and ``runwatch reload`` then says it got no answer."""
        path = state_dir / OUTCOME_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(dataclasses.asdict(self)), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("reload.outcome_not_written", path=str(path), error=exc.strerror)

    @classmethod
    def read(cls, state_dir: Path) -> ReloadOutcome | None:
        """The last outcome written to ``state_dir``; None when there is none (or it is unreadable)."""
        try:
            data = json.loads((state_dir / OUTCOME_FILE).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def wait(state_dir: Path, pid: int, since: int, timeout: float) -> ReloadOutcome | None:
    """The outcome of a reload by ``pid`` that began at ``since`` (µs, CLOCK_MONOTONIC) or later;
    None after ``timeout`` seconds, or as soon as ``pid`` is gone."""
    deadline = time.monotonic() + timeout
    while True:
        found = ReloadOutcome.read(state_dir)
        if found is not None and found.pid == pid and found.began >= since:
            return found
        if time.monotonic() >= deadline or not alive(pid):
            return None
        time.sleep(POLL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
