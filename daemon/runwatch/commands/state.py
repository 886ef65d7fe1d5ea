"""``runwatch state copy``: move a SQLite state to PostgreSQL, repeating nothing and losing nothing.

Everything the daemon decided is copied as it is (runs and the events already reported, monitors,
open alerts, the outbox with its ids and states, silences, meta keys, catch-up cursors), so a daemon
started on the database afterwards goes on where the SQLite one stopped: it sends what was pending,
and nothing that was sent or decided already.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import psycopg
from psycopg.conninfo import conninfo_to_dict

from runwatch.commands.common import load, say
from runwatch.credentials import read_credential
from runwatch.errors import StateError
from runwatch.service.assemble import state_location
from runwatch.store import Location, copy_state

#: The notification states, in the order the summary names them.
_STATES = ("pending", "sent", "dead", "silenced")


def state_copy(config_path: Path, to: str, out: TextIO) -> int:
    """Copy the config's SQLite state (its ``state_dir``) into the empty database ``to`` (its password:
    in the URL, the credential ``state_password``, or libpq's own)."""
    try:
        conninfo_to_dict(to)
    except psycopg.Error:
        raise StateError(
            "--to is not a PostgreSQL URL libpq understands (postgresql://user@host:5432/database)"
        ) from None
    config = load(config_path)
    source = state_location(config)
    target = Location(source.state_dir, to, read_credential("state_password"), source.instance)
    copied = copy_state(source.state_dir, target)
    states = ", ".join(f"{copied.get(f'notifications:{s}', 0)} {s}" for s in _STATES)
    say(
        f"copied {source.state_dir / 'runwatch.sqlite3'} to {target.where}: {copied['runs']} runs,"
        f" {copied['monitor_state']} monitors, {copied['notifications']} notifications ({states}),"
        f" {copied['alerts']} open alerts, {copied['silences']} silences;"
        " set state.url to it and start runwatch there",
        out,
    )
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    """``runwatch state copy``."""
    if args.action == "copy":
        return state_copy(args.config, args.to, sys.stdout)
    raise AssertionError(args.action)
