"""Reaching the PostgreSQL state: where it is (named without its password), one connection or a pool,
and every way that can fail as one line naming host, port and database.

The password may be in the URL, in the credential ``state_password`` (used when the URL has none), or
wherever libpq looks by itself (``PGPASSWORD``, ``PGPASSFILE``, ``PGSERVICE``). Each is registered
with :mod:`runwatch.redact`, and :attr:`Target.where` never carries one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from runwatch.errors import StateError, StateUnavailableError
from runwatch.redact import register, register_url

#: Seconds a connection attempt may take (the URL's own ``connect_timeout`` wins).
CONNECT_TIMEOUT = 10
#: Seconds a caller waits for a connection of the pool before the database counts as unreachable.
POOL_TIMEOUT = 10.0
#: Seconds a caller waits for a connection while the database is known to be away: a call made from
#: the event loop (a claim, a record, a scrape) fails fast instead of holding /metrics and /readyz.
DOWN_WAIT = 0.5
#: Seconds the pool keeps retrying a lost connection (its delay doubling from 1 s) before it gives up
#: and the next caller starts afresh: so a database back after a long outage is found within ~16 s,
#: not after a delay that doubled all along the outage.
RECONNECT_GIVE_UP = 30.0
#: Connections kept per instance: the event loop, every sending thread, a command or a scrape.
POOL_SIZE = 16
#: The first statement of a transaction whose reads must agree (one snapshot), writing nothing.
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

_PREFIX = re.compile(r"^(connection failed: )?(connection to server (at|on) [^,]*(, port \d+)? failed: )?")
_UNREACHABLE = (
    "connection refused", "timeout expired", "could not translate host name", "no route to host",
    "network is unreachable", "could not connect", "server closed the connection", "connection timed out",
    "no such file or directory", "terminating connection", "the database system is",
    "consuming input failed", "connection is lost", "connection is closed", "ssl syscall error",
)  # fmt: skip
_AUTH = ("password authentication failed", "no password supplied", "authentication failed",
         "pg_hba.conf", "role ")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """The database a state URL names, and the password a credential adds to it."""

    url: str
    password: str | None = None
    #: Shown as the connections' ``application_name`` (``pg_stat_activity``): which instance is which.
    instance: str = ""

    def __post_init__(self) -> None:
        register_url(self.url)
        register(self.password)
        register(os.environ.get("PGPASSWORD"))
        _parse(self.url)  # a URL libpq cannot read is one line now, before anything is opened

    @property
    def params(self) -> dict[str, Any]:
        return _parse(self.url)

    @property
    def where(self) -> str:
        """``postgresql://user@host:port/database``: host, port and database as libpq will use them
        (the URL, else ``PGHOST``/``PGPORT``/``PGDATABASE``/``PGUSER``, else libpq's defaults)."""
        p = self.params
        user = p.get("user") or os.environ.get("PGUSER") or ""
        host = p.get("host") or os.environ.get("PGHOST") or "localhost"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        db = p.get("dbname") or os.environ.get("PGDATABASE") or user
        shown_host = f"[{host}]" if ":" in host else host
        return f"postgresql://{user + '@' if user else ''}{shown_host}:{port}/{db}"

    def kwargs(self) -> dict[str, Any]:
        """What libpq is given beside the URL: a timeout, the credential's password, our name."""
        p = self.params
        out: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in p:
            out["connect_timeout"] = CONNECT_TIMEOUT
        if self.password and not p.get("password"):
            out["password"] = self.password
        if "application_name" not in p:
            out["application_name"] = f"runwatch {self.instance}".strip()
        return out


class Loaded:
    """A part of the state that keeps some of it in memory (its memory is the SQLite store's class,
    inherited after this one): read whole at start, and one provider again by ``reload(provider)`` when
    this instance takes over that provider's polling from another writer. Each read is one snapshot
    of the database (the part's several queries agree with each other)."""

    if TYPE_CHECKING:

        def empty(self) -> None: ...

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], target: Target) -> None:
        self.pool = pool
        self.target = target
        self.empty()
        self._read(None)

    def _read(self, provider: str | None) -> None:
        with failures(self.target), self.pool.connection() as conn, conn.transaction():
            conn.execute(_SNAPSHOT)
            self.load(conn, provider)

    def load(self, conn: psycopg.Connection[Any], provider: str | None) -> None:
        """Add one provider's rows (None: all) to memory, read on ``conn``."""
        raise NotImplementedError


def only(
    provider: str | None, column: str = "provider", *, first: bool = False
) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (`` AND column = %s``, or `` WHERE ...`` when ``first``) and its parameters
    that read one provider's rows; nothing for None (all of them)."""
    if provider is None:
        return "", ()
    return f" {'WHERE' if first else 'AND'} {column} = %s", (provider,)


def connect(target: Target) -> psycopg.Connection[Any]:
    """One connection (autocommit), or a StateError naming the database and what is wrong."""
    try:
        return psycopg.connect(target.url, **target.kwargs())
    except psycopg.Error as exc:
        raise explain(exc, target) from None


class StatePool(ConnectionPool[psycopg.Connection[Any]]):
    """The pool, aware that the database went away: once a connection broke or none could be had,
    callers wait :data:`DOWN_WAIT` instead of :data:`POOL_TIMEOUT`, until a connection is had again
    (the pool reconnects by itself in the background, with a growing delay)."""

    down = False

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        if timeout is None and self.down:
            timeout = DOWN_WAIT
        try:
            conn = super().getconn(timeout)
        except PoolTimeout:
            self.down = True
            raise
        self.down = False
        return conn

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        try:
            with super().connection(timeout) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if any(k in _detail(exc).lower() for k in _UNREACHABLE):
                self.down = True
            raise


def open_pool(target: Target, *, size: int = POOL_SIZE) -> ConnectionPool[psycopg.Connection[Any]]:
    """A pool of autocommit connections; callers wait at most :data:`POOL_TIMEOUT` for one."""
    return StatePool(
        target.url,
        kwargs=target.kwargs(),
        min_size=1,
        max_size=size,
        timeout=POOL_TIMEOUT,
        reconnect_timeout=RECONNECT_GIVE_UP,
        name="runwatch-state",
        open=True,
    )


@contextlib.contextmanager
def failures(target: Target) -> Iterator[None]:
    """Whatever the driver or the pool raises inside, as one StateError line naming the database."""
    try:
        yield
    except PoolTimeout:
        raise StateUnavailableError(f"state database {target.where} is unreachable: no connection") from None
    except psycopg.Error as exc:
        raise explain(exc, target) from None


def explain(exc: psycopg.Error, target: Target) -> StateError:
    """The driver's error as the one line a user acts on (never the password)."""
    detail = _detail(exc)
    low = detail.lower()
    where = target.where
    if "database" in low and "does not exist" in low:
        return StateError(
            f"state database {where} does not exist: create it (createdb), or correct state.url"
        )
    if any(k in low for k in _AUTH) and isinstance(exc, psycopg.OperationalError):
        return StateError(
            f"state database {where} refused the login: {detail}; check the user and its password "
            "(in state.url, the credential state_password, PGPASSWORD or PGPASSFILE)"
        )
    if isinstance(exc, psycopg.OperationalError) and any(k in low for k in _UNREACHABLE):
        return StateUnavailableError(f"state database {where} is unreachable: {detail}")
    return StateError(f"state database {where}: {detail}")


def _parse(url: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StateError(f"state.url is not a PostgreSQL URL libpq understands: {_detail(exc)}") from None


def _detail(exc: BaseException) -> str:
    """The driver's message on one line, without libpq's "connection to server at ... failed:" and
    severity prefixes (the line names the database itself)."""
    for line in str(exc).splitlines():
        line = _PREFIX.sub("", line.strip())
        line = re.sub(r"^(FATAL|ERROR):\s+", "", line)
        if line:
            return line
    return type(exc).__name__
