"""``runwatch run`` (the daemon in the foreground, as systemd runs it) and ``runwatch reload``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runwatch import log as logsetup
from runwatch.commands.check import cmd_check
from runwatch.config import load_config
from runwatch.redact import redact

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
        print(redact(f"runwatch: {exc}"), file=sys.stderr)
        return 1
    return 0


def cmd_reload(path: Path) -> int:
    """``runwatch reload``: SIGHUP to the daemon that holds this config's state directory.

    ``check`` first, so a broken file is reported here (the daemon would keep its config anyway).
    """
    from runwatch.store.sqlite.lock import holder_pid

    if cmd_check(path) != 0:
        return 1
    config = load_config(path)
    pid = holder_pid(config.state_dir)
    if pid is None:
        print(f"runwatch: no runwatch is running on {config.state_dir}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"runwatch: the runwatch holding {config.state_dir} (pid {pid}) is gone", file=sys.stderr)
        return 1
    print(f"reload signalled to runwatch pid {pid}; its log says whether the new config was taken")
    return 0
