"""sd_notify without a dependency: a datagram to $NOTIFY_SOCKET, a no-op when not under systemd.

The unit is ``Type=notify`` with ``WatchdogSec=``: systemd waits for ``READY=1``, shows ``STATUS=``,
tracks reloads (``RELOADING=1`` + ``MONOTONIC_USEC``, then ``READY=1``) and shutdown (``STOPPING=1``),
and restarts the service when ``WATCHDOG=1`` stops arriving. The beat is sent by a task on the event
loop (:func:`keep_watchdog`), so it stops exactly when the loop is wedged; a provider outage keeps the
loop turning, so it keeps beating.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import anyio


def notify(*states: str) -> bool:
    """Send ``states`` (``KEY=value`` lines) to systemd; False when not under systemd or on error."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    msg = "\n".join(states)
    if "RELOADING=1" in states and not any(s.startswith("MONOTONIC_USEC=") for s in states):
        msg += f"\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(msg.encode())
    except OSError:
        return False
    return True


def reloading() -> int:
    """Tell systemd a reload begins; returns the ``MONOTONIC_USEC`` sent (CLOCK_MONOTONIC, in µs).

    The same instant marks the reload's outcome, so ``runwatch reload`` can tell the answer to its own
    signal (a reload that began after it signalled) from an older one.
    """
    usec = time.monotonic_ns() // 1000
    notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
    return usec


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) says.

    None when systemd asked for no watchdog, or asked another process (``$WATCHDOG_PID``).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6 / 2


async def keep_watchdog(interval: float) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds while the event loop runs (until cancelled)."""
    while True:
        notify("WATCHDOG=1")
        await anyio.sleep(interval)
