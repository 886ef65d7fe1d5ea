"""``runwatch run`` (the daemon in the foreground, as systemd runs it) and ``runwatch reload``."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runwatch import log as logsetup
from runwatch.commands import journal
from runwatch.commands.check import cmd_check
from runwatch.config import load_config
from runwatch.redact import redact
from runwatch.service.reload_outcome import WAIT, alive, wait
from runwatch.store.sqlite.lock import holder_pid

if TYPE_CHECKING:
    pass


def cmd_run(path: Path) -> int:
    import anyio

    from runwatch.service.app import Daemon

    config = load_config(path)
    logsetup.setup(config.settings.log_level, config.settings.log_format)
    try:
        daemon = Daemon(config)
        anyio.run(daemon.serve_until_signalled)
    except OSError as exc:  # the metrics port is taken, or the like: the OS says what
        journal.say(redact(f"runwatch: {exc}"), journal.ERROR, sys.stderr)
        return 1
    return 0


def cmd_reload(path: Path, timeout: float) -> int:
    """``runwatch reload``: SIGHUP to the daemon that holds this config's state directory, and its answer.

    ``check`` first, so a broken file is reported here (the daemon would keep its config anyway); then
    the daemon's own verdict (:mod:`runwatch.service.reload_outcome`), which is what ``ExecReload=``
    returns.
    """
    if cmd_check(path) != 0:
        return 1
    return ask(load_config(path).state_dir, timeout=timeout, out=sys.stdout, err=sys.stderr)


def ask(state_dir: Path, *, timeout: float = WAIT, out: TextIO, err: TextIO) -> int:
    """``runwatch reload``, once the files passed ``check``: SIGHUP to the runwatch holding
    ``state_dir``, then its answer (see the module docstring); returns the exit status."""

    pid = holder_pid(state_dir)
    if pid is None:
        journal.say(f"runwatch: no runwatch is running on {state_dir}", journal.ERROR, err)
        return 1
    sent = time.monotonic_ns() // 1000
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        journal.say(f"runwatch: the runwatch holding {state_dir} (pid {pid}) is gone", journal.ERROR, err)
        return 1
    except PermissionError:
        journal.say(
            f"runwatch: not allowed to signal the runwatch holding {state_dir} (pid {pid});"
            " run this as root (sudo), or use: sudo systemctl reload runwatch",
            journal.ERROR,
            err,
        )
        return 1
    outcome = wait(state_dir, pid, sent, timeout)
    if outcome is None:
        what = f"did not answer within {timeout:g} s" if alive(pid) else "ended before it answered"
        journal.say(f"runwatch: runwatch pid {pid} {what}; its log says why", journal.ERROR, err)
        return 1
    if not outcome.ok:
        for problem in outcome.problems:
            journal.say(problem, journal.ERROR, out)
        journal.say(
            f"runwatch: runwatch pid {pid} refused the new config and keeps running the one it had",
            journal.ERROR,
            err,
        )
        return 1
    for key in outcome.needs_restart:
        journal.say(f"warning: {key} changed; it takes effect when runwatch restarts", journal.WARNING, err)
    journal.say(f"reload: runwatch pid {pid} took the new config ({outcome.rules} rules)", journal.INFO, out)
    return 0
