"""Fencing: a poller's write is made only while its lease still names it, checked in the write's own
transaction (the leases are the leadership's; their table is created with the schema).

The lease row is read ``FOR SHARE``: a holder renewing it, or a new holder taking it over, waits for
the write to commit, and the write waits for a take-over that is committing; so no write lands after
the lease passed to another holder, whatever the writer's own clock says.
"""

from __future__ import annotations

from typing import Any

import psycopg

from runwatch.errors import FencedOut
from runwatch.store.interfaces import Fence

_CHECK = (
    "SELECT 1 FROM runwatch_leases WHERE name = %s AND holder = %s AND token = %s"
    " AND expires_at > extract(epoch from clock_timestamp()) FOR SHARE"
)


def fenced(cur: psycopg.Cursor[Any], fence: Fence | None) -> None:
    """Inside the write's transaction, before it writes: FencedOut (the caller's transaction then
    rolls back, writing nothing) unless ``fence`` still holds. No fence: nothing to check."""
    if fence is None:
        return
    if cur.execute(_CHECK, (fence.lease, fence.holder, fence.token)).fetchone() is None:
        raise FencedOut(
            f"lease {fence.lease!r} no longer held by {fence.holder} with token {fence.token}"
            " (it expired, or another instance took it over): nothing was written"
        )
