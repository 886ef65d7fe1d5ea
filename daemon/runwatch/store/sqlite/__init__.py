"""The embedded store: one SQLite file (WAL) per state directory, held by one daemon (an OS lock).

Each part has its module (``runs``, ``outbox``, ``alerts``, ``monitors``, ``silences``) with its SQL;
``database`` opens and migrates the file; ``state`` puts the parts together behind the interfaces of
:mod:`runwatch.store.interfaces`.
"""

from runwatch.store.sqlite.database import STATE_FILE
from runwatch.store.sqlite.outbox import SqliteOutbox
from runwatch.store.sqlite.state import SqliteShared, SqliteState, open_outbox

__all__ = ["STATE_FILE", "SqliteOutbox", "SqliteShared", "SqliteState", "open_outbox"]
