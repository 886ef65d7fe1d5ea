"""Debian packages some tests need, installed by the tests themselves when missing.

The README's test command is all CI runs, so it must pass on a fresh Debian or Ubuntu machine: a test
that drives a real tool (``promtool``, ``prometheus``, ``systemd-analyze``; PostgreSQL later) installs
its package once instead of relying on a setup step somewhere else. The install runs under a file lock
so parallel test processes (and several checkouts on one machine) install a package once; a package
that cannot be installed fails the test with apt's reason and the command to run by hand, never a
skip. Root runs apt-get directly; anyone else through ``sudo -n`` (a password prompt would hang a run).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

#: How long apt-get waits for another package manager to let go of dpkg's lock.
DPKG_LOCK_WAIT = 300
#: package -> why it could not be installed, so later tests of the session fail at once.
_FAILED: dict[str, str] = {}


def install(package: str, present: Callable[[], object]) -> None:
    """Install the Debian ``package`` unless ``present()`` is true once the install lock is held.

    ``present`` is asked again under the lock because another test process may have installed the
    package while this one waited. ``apt-get update`` runs only when the install fails: a fresh image
    may have no package lists, while a usual machine installs without touching the network index.
    """
    if package in _FAILED:
        pytest.fail(_FAILED[package], pytrace=False)
    lock = Path(tempfile.gettempdir()) / "runwatch-tests-apt.lock"
    # Read-only: flock needs no more, and another user's lock file can still be opened so.
    held = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        if present():
            return
        tried = _apt("install", "-y", "--no-install-recommends", package)
        if tried.returncode != 0:
            tried = _apt("update")
            if tried.returncode == 0:
                tried = _apt("install", "-y", "--no-install-recommends", package)
    finally:
        os.close(held)  # releases the lock
    if tried.returncode != 0:
        _FAILED[package] = (
            f"the Debian package {package!r} is needed by this test and could not be installed "
            f"({' '.join(map(str, tried.args))} exited {tried.returncode}); install it by hand: "
            f"`sudo apt-get install -y {package}`\n{tried.stdout[-2000:]}"
        )
        pytest.fail(_FAILED[package], pytrace=False)


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    command = [*sudo, "apt-get", "-o", f"DPkg::Lock::Timeout={DPKG_LOCK_WAIT}", *args]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
        )
    except FileNotFoundError as exc:  # no apt-get (not Debian) or no sudo
        return subprocess.CompletedProcess(command, 127, f"{exc.filename}: not found")
