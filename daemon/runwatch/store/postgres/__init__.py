"""The shared store: the state in one PostgreSQL database, for one instance or several.

Each part has its module with its SQL (``runs``, ``outbox``, ``alerts``, ``monitors``, ``silences``);
``schema`` creates and migrates the tables, ``connect`` reaches the database and names every failure in
one line, ``fence`` checks a poller's lease inside its writes, ``state`` puts the parts together behind
the interfaces of :mod:`runwatch.store.interfaces`. psycopg 3 with its pool, blocking: the interfaces
are synchronous (see there).
"""

from runwatch.store.postgres.connect import Target
from runwatch.store.postgres.schema import SCHEMA_VERSION
from runwatch.store.postgres.state import PostgresShared, PostgresState, probe

__all__ = ["SCHEMA_VERSION", "PostgresShared", "PostgresState", "Target", "probe"]
