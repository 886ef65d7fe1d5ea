"""sd_notify without a dependency: a datagram to $NOTIFY_SOCKET, a no-op when not under systemd."""

from __future__ import annotations

import os
import socket
import time


def notify(*states: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    msg = "\n".join(states)
    if "RELOADING=1" in states:
        msg += f"\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(msg.encode())
    except OSError:
        return False
    return True
